"""Build a real-text test corpus from the documentation shipped with a Debian system.

Sources (all text that Debian packages install, under ``share_dir``, default
``/usr/share``):

* ``licence``: ``common-licenses/*`` (GPL, Apache-2.0, ...);
* ``copyright``: ``doc/*/copyright``;
* ``man``: ``man/man{1,5,8}/*.gz``, gunzipped and crudely stripped of roff (lines
  starting with ``.``/``'`` and ``\\"`` comments dropped, ``\\fB``-style escapes removed);
* ``doc``: ``doc/**/README*`` and ``doc/**/*.md`` (``.gz`` too).

Each file is cut into paragraphs and paragraphs are packed into chunks whose target
length is drawn from a log-normal distribution (median ~350 characters, capped at
``max_chars``), so most documents are short and a few run past 512 model tokens
(> 3,000 characters). At most ``MAX_CHUNKS_PER_FILE`` chunks come from one file and
the four collections are taken in turn, so the corpus mixes them; within a collection
files are taken by family in turn (``git-*``, ``gcloud_*``, ``libfoo*``) so that one
package with thousands of pages does not crowd out the others. Chunks are made
unique by :func:`beam_e5.dedupe.text_key.text_key`; then ``duplicate_fraction`` of the
documents are planted duplicates of others: exact copies and variants differing only in
case or whitespace (same text key), with ids ``ORIGINAL~dupN``. Ids name the file and
the chunk, e.g. ``man1/ls.1.gz#3``. Symlinks are skipped. The result depends only on
``seed`` and the files present.

CLI: ``python -m tools.localtext --n 5000 --out corpus.jsonl``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from beam_e5.dedupe.text_key import text_key
from beam_e5.errors import ConfigError

__all__ = ["build_local_corpus", "main", "write_jsonl"]

MAX_CHUNKS_PER_FILE = 6
MAX_FILE_CHARS = 200_000
MIN_CHUNK_CHARS = 20
_PARA_MACROS = ("SH", "SS", "PP", "LP", "P", "TP", "IP", "sp", "HP", "RS", "RE", "br")
_SPECIALS = {"em": "\u2014", "en": "\u2013", "bu": "\u2022", "aq": "'", "dq": '"', "lq": '"', "rq": '"',
             "co": "\u00a9", "rg": "\u00ae", "mu": "\u00d7", "ga": "`", "ti": "~", "ha": "^"}  # fmt: skip
_ESCAPES = [
    (re.compile(r'\\".*$'), ""),
    (re.compile(r"\\f(?:\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\\((..)"), lambda m: _SPECIALS.get(m.group(1), "")),
    (re.compile(r"\\\[([^\]]*)\]"), lambda m: _SPECIALS.get(m.group(1), "")),
    (re.compile(r"\\\*(?:\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\s[+-]?\d"), ""),
    (re.compile(r"\\[&|^c%,/]"), ""),
    (re.compile(r"\\[ ~0]"), " "),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\(.)"), r"\1"),
]


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")[:MAX_FILE_CHARS]


def strip_roff(source: str) -> str:
    """Crude roff to text: drop requests and comments, remove escapes, keep paragraphs."""
    out: list[str] = []
    in_definition = False  # inside .de/.am/.ig ... ".." (macro definitions, ignored text)
    for line in source.splitlines():
        if in_definition:
            in_definition = line.strip() != ".."
            continue
        if line.startswith((".de", ".am", ".ig")):
            in_definition = True
            continue
        if line.startswith((".", "'")):
            if line[1:].split(" ", 1)[0].strip() in _PARA_MACROS:
                out.append("")
            continue
        if line.startswith('\\"'):
            continue
        for pattern, repl in _ESCAPES:
            line = pattern.sub(repl, line)
        out.append(line.strip())
    return "\n".join(out)


def _paragraphs(text: str, reflow: bool) -> list[str]:
    paras = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.rstrip() for line in block.strip("\n").splitlines() if line.strip()]
        if lines:
            paras.append(" ".join(line.strip() for line in lines) if reflow else "\n".join(lines))
    return paras


def _split_long(para: str, max_chars: int) -> Iterator[str]:
    while len(para) > max_chars:
        cut = para.rfind(" ", max_chars // 2, max_chars)
        cut = cut if cut > 0 else max_chars
        yield para[:cut].rstrip()
        para = para[cut:].lstrip()
    if para:
        yield para


def _chunks(paras: list[str], rng: random.Random, max_chars: int) -> list[str]:
    def target() -> int:
        return min(max_chars, max(40, int(rng.lognormvariate(math.log(350), 1.1))))

    chunks: list[str] = []
    cur: list[str] = []
    size, want = 0, target()
    for para in (p for raw in paras for p in _split_long(raw, max_chars)):
        if cur and size + 2 + len(para) > max_chars:
            chunks.append("\n\n".join(cur))
            cur, size, want = [], 0, target()
        cur.append(para)
        size += len(para) + (2 if size else 0)
        if size >= want:
            chunks.append("\n\n".join(cur))
            cur, size, want = [], 0, target()
    if cur:
        chunks.append("\n\n".join(cur))
    return [c for c in chunks if len(c.strip()) >= MIN_CHUNK_CHARS]


def _sources(share: Path) -> dict[str, list[tuple[str, Path]]]:
    """``{collection: [(id prefix, path)]}``, sorted; symlinks and non-files skipped."""

    def files(paths: Iterator[Path]) -> list[Path]:
        return sorted(p for p in paths if p.is_file() and not p.is_symlink())

    doc = share / "doc"
    readmes = [p for p in doc.glob("**/*") if p.name.startswith("README") or p.name.endswith((".md", ".md.gz"))]
    return {
        "licence": [(f"common-licenses/{p.name}", p) for p in files((share / "common-licenses").glob("*"))],
        "copyright": [(f"doc/{p.parent.name}/copyright", p) for p in files(doc.glob("*/copyright"))],
        "man": [
            (f"{p.parent.name}/{p.name}", p)
            for section in ("man1", "man5", "man8")
            for p in files((share / "man" / section).glob("*.gz"))
        ],
        "doc": [(f"doc/{p.relative_to(doc)}", p) for p in files(iter(readmes))],
    }


def _family(prefix: str) -> str:
    """``man1/git-add.1.gz`` -> ``git``; ``doc/libegl-mesa0/copyright`` -> ``libegl``."""
    parts = prefix.split("/")
    name = parts[1] if parts[0] == "doc" and len(parts) > 2 else parts[-1]
    return re.split(r"[-_.]", name, maxsplit=1)[0]


def _interleave(items: list[tuple[str, Path]], rng: random.Random) -> list[tuple[str, Path]]:
    """Shuffle, taking families (e.g. the thousands of ``gcloud_*`` pages) in turn."""
    families: dict[str, list[tuple[str, Path]]] = {}
    for item in items:
        families.setdefault(_family(item[0]), []).append(item)
    groups = [families[name] for name in sorted(families)]
    for group in groups:
        rng.shuffle(group)
    rng.shuffle(groups)
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def _collection_chunks(
    items: list[tuple[str, Path]], collection: str, rng: random.Random, max_chars: int
) -> Iterator[dict[str, str]]:
    for prefix, path in _interleave(items, rng):
        try:
            text = _read_text(path)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if collection == "man":
            text = strip_roff(text)
        chunks = list(enumerate(_chunks(_paragraphs(text, reflow=collection == "man"), rng, max_chars)))
        if len(chunks) > MAX_CHUNKS_PER_FILE:
            chunks = sorted(rng.sample(chunks, MAX_CHUNKS_PER_FILE))
        for i, chunk in chunks:
            yield {"id": f"{prefix}#{i}", "text": chunk, "collection": collection}


def _variant(text: str, rng: random.Random) -> str:
    """The same text, or a copy differing only in case or whitespace (same text key)."""
    kind = rng.choice(["exact", "upper", "lower", "whitespace"])
    if kind == "upper":
        out = text.upper()
    elif kind == "lower":
        out = text.lower()
    elif kind == "whitespace":
        out = "  " + re.sub(r"\s+", lambda m: rng.choice([" ", "  ", "\n", "\t", " \n "]), text) + "\n"
    else:
        out = text
    return out if text_key(out) == text_key(text) else text


def build_local_corpus(
    n_docs: int,
    seed: int = 0,
    max_chars: int = 4000,
    duplicate_fraction: float = 0.05,
    share_dir: str = "/usr/share",
) -> list[dict]:
    """``n_docs`` documents ``{"id", "text", "collection"}`` (see the module docstring)."""
    if n_docs < 1:
        raise ConfigError(f"n_docs must be at least 1, got {n_docs}")
    if not 0 <= duplicate_fraction < 1:
        raise ConfigError(f"duplicate_fraction must be in [0, 1), got {duplicate_fraction}")
    if max_chars < 200:
        raise ConfigError(f"max_chars must be at least 200, got {max_chars}")
    rng = random.Random(seed)
    n_dups = round(n_docs * duplicate_fraction)
    n_unique = n_docs - n_dups
    streams = [
        _collection_chunks(items, name, random.Random(f"{seed}:{name}"), max_chars)
        for name, items in _sources(Path(share_dir)).items()
    ]
    pool: list[dict] = []
    seen: set[str] = set()
    while streams and len(pool) < n_unique:
        for stream in list(streams):
            doc = next(stream, None)
            if doc is None:
                streams.remove(stream)
            elif (key := text_key(doc["text"])) not in seen:
                seen.add(key)
                pool.append(doc)
                if len(pool) == n_unique:
                    break
    if len(pool) < n_unique:
        raise ConfigError(
            f"found only {len(pool)} distinct text chunks under {share_dir}; ask for fewer documents "
            "or install more packages with documentation (man pages, /usr/share/doc)"
        )
    originals = rng.sample(pool, n_dups) if n_dups <= len(pool) else rng.choices(pool, k=n_dups)
    copies: dict[str, int] = {}
    docs = list(pool)
    for orig in originals:
        copies[orig["id"]] = copies.get(orig["id"], 0) + 1
        docs.append({**orig, "id": f"{orig['id']}~dup{copies[orig['id']]}", "text": _variant(orig["text"], rng)})
    rng.shuffle(docs)
    return docs


def write_jsonl(docs: list[dict], path: str | os.PathLike[str]) -> None:
    """Write one JSON object per line (UTF-8, non-ASCII kept)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m tools.localtext", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, required=True, help="number of documents")
    parser.add_argument("--out", required=True, help="output JSONL path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-chars", type=int, default=4000)
    parser.add_argument("--duplicate-fraction", type=float, default=0.05)
    parser.add_argument("--share-dir", default="/usr/share")
    args = parser.parse_args(argv)
    try:
        docs = build_local_corpus(args.n, args.seed, args.max_chars, args.duplicate_fraction, args.share_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_jsonl(docs, args.out)
    sizes = sorted(len(d["text"]) for d in docs)
    print(f"wrote {len(docs)} documents to {args.out} (median {sizes[len(sizes) // 2]} chars, "
          f"{sum(s > 3000 for s in sizes)} over 3,000)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
