"""Do a model's language neurons follow the language or its script? (Verma et al., ACL 2026)

    python examples/script_controls.py --languages en,ru,zh,ja --tokens-per-language 4096

Runs LAPE on the same text as it is, romanised, and with each sentence's words shuffled,
and prints, per language, how many of its neurons survive each control against the
overlap two random sets of those sizes would have.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.interfaces.plots import plot_script_controls, save_figure
from mlneurons.methods.script_controls import ScriptControlsResult, script_controls
from mlneurons.models import DEFAULT_MODEL


def compare_controls(
    model_name: str,
    languages: list[str],
    *,
    corpus_dir: str | None = None,
    tokens_per_language: int = 4096,
    top_rate: float = 0.01,
    out: Path = Path("runs/example-script-controls"),
) -> ScriptControlsResult:
    model = mlneurons.load_model(model_name)
    if corpus_dir is None:
        corpus = MultilingualCorpus.builtin(languages, tokens_per_language=tokens_per_language)
    else:
        corpus = MultilingualCorpus.from_files(
            corpus_dir, tokens_per_language=tokens_per_language, seq_len=64
        ).subset(languages)

    result = script_controls(model, corpus, top_rate=top_rate)
    for pair, rows in result.overlaps().items():
        for lang, row in rows.items():
            print(
                f"{pair:20s} {lang}: {row['overlap']:4d} shared of {row['a']}/{row['b']} "
                f"(chance {row['chance']['expected']:.1f}, Holm p {row['p_holm']:.2g})"
            )
    result.save(out)
    save_figure(plot_script_controls(result), out / "script_controls.png")
    return result


def main(argv: list[str] | None = None) -> ScriptControlsResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--languages", default="en,ru,zh,ja")
    parser.add_argument("--corpus", default=None, help="folder of {lang}.txt (default: built-in)")
    parser.add_argument("--tokens-per-language", type=int, default=4096)
    parser.add_argument("--top-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("runs/example-script-controls"))
    args = parser.parse_args(argv)
    return compare_controls(
        args.model,
        args.languages.split(","),
        corpus_dir=args.corpus,
        tokens_per_language=args.tokens_per_language,
        top_rate=args.top_rate,
        out=args.out,
    )


if __name__ == "__main__":
    main()
