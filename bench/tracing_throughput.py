"""Throughput of knowledge tracing's presence pass: Aho-Corasick against the per-entity scan.

The text is the built-in prose of each language repeated ``--repeat`` times, the facts
the built-in fact set of those languages, the tokenizer the built-in Gemma 3 270M's, in
chunks of 512 tokens. It prints, for ``search="aho-corasick"`` and ``search="scan"``:

* end to end (``fact_presence``: tokenise, cut, decode, normalise, match): MB/s of text
  (UTF-8 bytes of the documents) and chunks/s;
* the matching alone, on the chunks' prepared text held in memory: MB/s of that text;
* the Aho-Corasick / scan ratio of each, and how the end-to-end time splits between
  tokenising, decoding and matching;

Times are wall-clock and, in brackets, CPU seconds of this process (``time.process_time``,
all threads): on a shared machine the CPU figures are the steadier ones. It asserts that
both give identical tracing codes (``trace``, with a fixed correctness
map). With ``--stem`` it also times ``match="stem"`` (inflection-aware, pure-Python
Snowball stemmers). With ``--memory-mb N`` it streams a file of N and of 8N MB of text
(``MultilingualCorpus.from_files``) in fresh processes and prints the peak memory of each.

Run: ``.venv/bin/python bench/tracing_throughput.py [--repeat 4] [--stem] [--memory-mb 2]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zlib
from typing import Any


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from mlneurons.models.loading import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("gemma-3-270m"))


class Clock:
    """Wall-clock and CPU seconds (this process, all threads) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def throughput(languages: list[str], repeat: int, chunk_tokens: int, stem: bool) -> dict[str, Any]:
    from mlneurons.data.builtin_text import builtin_paragraphs
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.data.facts import FactSet
    from mlneurons.methods.tracing import _chunk_presence, _chunks, _Rules, fact_presence, trace

    tok = tokenizer()
    docs = {lang: builtin_paragraphs(lang) * repeat for lang in languages}
    corpus = MultilingualCorpus({lang: lambda d=d: d for lang, d in docs.items()})
    facts = FactSet.builtin(languages=languages)
    text_mb = sum(len(d.strip().encode()) for ds in docs.values() for d in ds) / 1e6
    out: dict[str, Any] = {"languages": languages, "facts": len(facts.facts), "text_mb": text_mb}

    # the phases, once: tokenise; tokenise + cut + decode + normalise (chunks kept)
    clock = Clock()
    n_tokens = sum(p.numel() for lang in languages for p in corpus.token_stream(lang, tok))
    out["tokenise_s"] = clock.read()
    clock = Clock()
    rules = {lang: _Rules.of(lang, "exact") for lang in languages}
    prepared = {
        lang: list(_chunks(lang, corpus, tok, chunk_tokens, rules[lang].prepare, False))
        for lang in languages
    }
    out["decode_s"] = tuple(b - a for a, b in zip(out["tokenise_s"], clock.read()))
    n_chunks = sum(map(len, prepared.values()))
    chunk_mb = sum(len(c.encode()) for cs in prepared.values() for c in cs) / 1e6
    out.update(tokens=n_tokens, chunks=n_chunks, chunk_text_mb=chunk_mb)

    # the matching alone, on the chunks' prepared text
    pairs = {
        lang: [(rules[lang].prepare(f.subject), rules[lang].prepare(f.object))
               for f in facts.facts if f.lang == lang]
        for lang in languages
    }  # fmt: skip
    for search in ("aho-corasick", "scan"):
        clock = Clock()
        for lang in languages:
            _chunk_presence(prepared[lang], pairs[lang], rules[lang].boundary, search)
        out[f"match_{search}_s"] = clock.read()

    # end to end; the codes of both searches
    correct = {(f.uuid, f.lang): zlib.crc32(f.uuid.encode()) % 2 == 0 for f in facts.facts}
    codes = {}
    for search in ("aho-corasick", "scan"):
        clock = Clock()
        fact_presence(facts, corpus, tok, chunk_tokens=chunk_tokens, search=search, progress=False)
        out[f"end_to_end_{search}_s"] = clock.read()
        result = trace(facts, corpus, tok, correct, chunk_tokens=chunk_tokens, search=search,
                       progress=False)  # fmt: skip
        codes[search] = result.codes
    assert codes["aho-corasick"] == codes["scan"], "the two searches gave different codes"
    out["identical_codes"] = True
    out["present"] = sum(c in (1, 3) for row in codes["scan"].values() for c in row.values())
    if stem:
        clock = Clock()
        fact_presence(facts, corpus, tok, chunk_tokens=chunk_tokens, match="stem", progress=False)
        out["end_to_end_stem_s"] = clock.read()
    return out


def rate(megabytes: float, seconds: tuple[float, float]) -> str:
    """``megabytes`` per wall second (per CPU second)."""
    return f"{megabytes / seconds[0]:7.3f} MB/s ({megabytes / seconds[1]:7.3f} MB/CPU-s)"


def peak_rss_mb(megabytes: float) -> float:
    """Peak memory of tracing a ``{lang}.txt`` file of ``megabytes`` MB, in a fresh process."""
    code = f"""
import re, tempfile, pathlib
from transformers import AutoTokenizer
from mlneurons.data.builtin_text import builtin_paragraphs
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.data.facts import FactSet
from mlneurons.methods.tracing import fact_presence
from mlneurons.models.loading import resolve_model_path
tok = AutoTokenizer.from_pretrained(resolve_model_path("gemma-3-270m"))
folder = pathlib.Path(tempfile.mkdtemp())
block = "\\n".join(builtin_paragraphs("en")) + "\\n"
with open(folder / "en.txt", "w") as handle:
    for _ in range(max(1, round({megabytes} * 1e6 / len(block.encode())))):
        handle.write(block)
corpus = MultilingualCorpus.from_files(folder)
fact_presence(FactSet.builtin(languages=["en"]), corpus, tok, progress=False)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", default="en,de,fr,es,ru,zh,ja,ar,hi")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the built-in text")
    parser.add_argument("--chunk-tokens", type=int, default=512)
    parser.add_argument("--stem", action="store_true", help="also time match='stem'")
    parser.add_argument("--memory-mb", type=float, default=0, help="peak memory of N and 8N MB")
    args = parser.parse_args()
    r = throughput(args.languages.split(","), args.repeat, args.chunk_tokens, args.stem)
    text, chunk_text = r["text_mb"], r["chunk_text_mb"]
    print(f"text: {text:.2f} MB, {r['tokens']} tokens, {r['chunks']} chunks of "
          f"{args.chunk_tokens} tokens, {r['facts']} facts in {len(r['languages'])} languages")  # fmt: skip
    for search in ("aho-corasick", "scan"):
        seconds = r[f"end_to_end_{search}_s"]
        print(f"{search:>12} end to end: {rate(text, seconds)}, "
              f"{r['chunks'] / seconds[0]:.0f} chunks/s")  # fmt: skip
    for search in ("aho-corasick", "scan"):
        print(f"{search:>12} matching alone: {rate(chunk_text, r[f'match_{search}_s'])}")
    ratios = {
        f"{part}_ratio": [s / a for a, s in zip(r[f"{part}_aho-corasick_s"], r[f"{part}_scan_s"])]
        for part in ("end_to_end", "match")
    }
    r.update(ratios)
    for part, (wall, cpu) in ratios.items():
        print(f"aho-corasick / scan, {part[:-6].replace('_', ' ')}: {wall:.2f}x ({cpu:.2f}x CPU)")
    total = r["end_to_end_aho-corasick_s"]
    print(f"aho-corasick end to end {total[0]:.2f} s ({total[1]:.2f} CPU-s): tokenise "
          f"{r['tokenise_s'][1]:.2f}, decode + normalise {r['decode_s'][1]:.2f}, match "
          f"{r['match_aho-corasick_s'][1]:.2f} CPU-s")  # fmt: skip
    print(f"identical codes: {r['identical_codes']} ({r['present']} facts present)")
    if args.stem:
        print(f"match='stem' end to end: {rate(text, r['end_to_end_stem_s'])}")
    if args.memory_mb:
        small, large = peak_rss_mb(args.memory_mb), peak_rss_mb(8 * args.memory_mb)
        r.update(peak_rss_small_mb=small, peak_rss_large_mb=large)
        print(f"peak RSS streaming {args.memory_mb:g} MB: {small:.0f} MB; "
              f"{8 * args.memory_mb:g} MB: {large:.0f} MB (ratio {large / small:.2f})")  # fmt: skip
    print(json.dumps(r))


if __name__ == "__main__":
    main()
