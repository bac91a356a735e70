"""Real text found on this machine (licences shipped by Debian), for tests that need it."""

from __future__ import annotations

import glob
import re


def licence_paragraphs(limit: int) -> list[str]:
    """Up to ``limit`` distinct non-empty paragraphs of /usr/share/common-licenses, in a fixed
    order."""
    paragraphs: list[str] = []
    seen: set[str] = set()
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, IsADirectoryError):
            continue
        for p in text.split("\n\n"):
            p = re.sub(r"\s+", " ", p).strip()
            if p and p not in seen:
                seen.add(p)
                paragraphs.append(p)
    if not paragraphs:
        raise RuntimeError("no licence texts under /usr/share/common-licenses")
    return paragraphs[:limit]


def mixed_length_texts(n: int) -> list[str]:
    """``n`` real texts: short titles, paragraphs, and joined paragraphs beyond 512 tokens."""
    paras = licence_paragraphs(max(n, 400))
    texts = []
    for i in range(n):
        p = paras[i % len(paras)]
        if i % 10 == 0:
            texts.append(" ".join(paras[i % len(paras):i % len(paras) + 12]))  # long
        elif i % 3 == 0:
            texts.append(" ".join(p.split()[:6]))  # short
        else:
            texts.append(p)
    return texts


def write_nightly_corpora(root) -> tuple[set[str], set[str], set[str]]:
    """``root/v1.jsonl`` (1,000 real-text documents) and ``root/v2.jsonl``: the next night's
    corpus with 5% of them edited, 2% deleted and 3% new. Returns (edited, deleted, new) ids."""
    from tools.localtext import build_local_corpus, write_jsonl

    docs = build_local_corpus(1100, seed=3, max_chars=600, duplicate_fraction=0.0)
    base, extra = docs[:1000], docs[1000:1030]
    write_jsonl(base, root / "v1.jsonl")
    edited = {d["id"] for d in base[100:150]}  # 5% edited
    deleted = {d["id"] for d in base[500:520]}  # 2% deleted
    v2 = [dict(d, text=d["text"] + " (revised)") if d["id"] in edited else d
          for d in base if d["id"] not in deleted] + extra  # 3% new
    write_jsonl(v2, root / "v2.jsonl")
    return edited, deleted, {d["id"] for d in extra}
