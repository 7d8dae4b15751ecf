"""Record the sha256 of every built-in language's cleaned text, and the dataset_build version.

    python scripts/freeze_builtin_corpus.py

Run after changing the cleaning in ``mlneurons/builtin_corpus.py`` or moving to another
``dataset_build`` release on purpose; ``MultilingualCorpus.builtin`` then warns whenever
the installed package gives other text than the one recorded here.
"""

from __future__ import annotations

import json

from mlneurons.data.builtin_text import (
    FROZEN_HASHES,
    available_languages,
    dataset_build_version,
    text_sha256,
)


def main() -> None:
    frozen = {
        "dataset_build": dataset_build_version(),
        "sha256": {code: text_sha256(code) for code in available_languages()},
    }
    FROZEN_HASHES.write_text(json.dumps(frozen, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {FROZEN_HASHES} ({len(frozen['sha256'])} languages)")


if __name__ == "__main__":
    main()
