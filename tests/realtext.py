"""Real text found on this machine (licences shipped by Debian), for tests that need it."""

from __future__ import annotations

import glob
import re


def licence_paragraphs(limit: int) -> list[str]:
    """Up to ``limit`` distinct non-empty paragraphs of /usr/share/common-licenses, in a fixed order."""
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
