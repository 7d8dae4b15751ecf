"""Built-in steering questions (Tang et al. 2024, section 5), from ``questions.json``.

At least 24 short everyday and general-knowledge questions per language, comparable
across languages.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError


def load_questions(language: str) -> list[str]:
    """Short open questions in a language, for prompting a model.

    Args:
        language: a code of :func:`question_languages`, normalised as everywhere
            (``" FR "`` and ``"fra"`` give ``"fr"``).

    Returns:
        A new list of questions, in a fixed order.

    Raises:
        UserError: there are no questions in that language.
    """
    questions = _questions()
    try:
        key = normalize_language(language, questions)
    except UserError:
        raise UserError(
            f"no questions for language {language!r}; available: {', '.join(sorted(questions))}"
        ) from None
    return list(questions[key])


def question_languages() -> list[str]:
    """ISO 639-1 codes that :func:`load_questions` has questions for, sorted."""
    return sorted(_questions())


@functools.cache
def _questions() -> dict[str, tuple[str, ...]]:
    path = resources.files("mlneurons").joinpath("data", "questions.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {lang: tuple(qs) for lang, qs in data.items()}


__all__ = ["load_questions", "question_languages"]
