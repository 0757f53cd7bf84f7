#!/usr/bin/env python3
"""Rebuild the Debian-sourced texts in this folder from the Debian packages
that ship them (see README.md here for sources and licenses).

Why: tests/reference/compare_llamacpp.py needs English texts that nothing
else in the project uses; these come from files that Debian packages install,
so the extraction is written down here instead of being done by hand.

  apt-get install doc-debian debian-faq base-files   # base-files: always there
  python3 tests/data/text/make_texts.py

Writes debian-faq-ch1.txt (chapter 1 of the Debian FAQ, package debian-faq),
debian-manifesto.txt (the Debian Manifesto, package doc-debian) and
gpl-3.txt (verbatim copy of /usr/share/common-licenses/GPL-3, package
base-files). "Markup" stripped from the first two: the hard line wraps
(paragraphs are reflowed to one line each), the '====' heading underlines
and '****' banners, and the FAQ's parenthesized link targets
"(https://...)", which its text renderer split across lines, and its
no-break spaces (made plain spaces). Each of the two
starts with '#' lines naming the source and license; compare_llamacpp.py
drops them.
"""

import gzip
import os
import re
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
FAQ = "/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
MANIFESTO = "/usr/share/doc/debian/debian-manifesto.gz"
GPL3 = "/usr/share/common-licenses/GPL-3"


def paragraphs(lines):
    """Blank-line separated blocks, each joined into one line."""
    out, cur = [], []
    for line in lines + [""]:
        s = line.strip()
        if not s:
            if cur:
                out.append(cur)
                cur = []
            continue
        cur.append(s)
    joined = []
    for block in out:
        text = block[0]
        for s in block[1:]:
            # The renderer broke "GNU/Hurd" as "GNU" + "/Hurd".
            text += s if s.startswith("/") else " " + s
        joined.append(text)
    return joined


def faq_chapter1():
    with gzip.open(FAQ, "rt", encoding="utf-8") as f:
        # The renderer writes no-break spaces in "Chapter 1", "Section 12.1".
        lines = f.read().replace("\u00a0", " ").splitlines()
    stripped = [l.strip() for l in lines]
    start = stripped.index("Chapter 1. Definitions and overview")
    end = stripped.index("Chapter 2. Getting and installing Debian GNU/Linux")
    out = []
    for p in paragraphs(lines[start:end]):
        p = re.sub(r"\s*\(https?:[^()]*\)", "", p)  # link targets
        p = re.sub(r"\s+([.,)])", r"\1", p)
        p = re.sub(r"\s{2,}", " ", p)
        out.append(p)
    header = [
        "# Source: Debian package debian-faq 11.1, /usr/share/doc/debian/FAQ/debian-faq.en.txt.gz,",
        "# chapter 1 (reflowed, link targets removed; tests/data/text/make_texts.py).",
        "# Copyright (C) 1996-2021 Software in the Public Interest.",
        "# Permission is granted to make and distribute verbatim copies of this document provided",
        "# the copyright notice and this permission notice are preserved on all copies. Permission",
        "# is granted to copy and distribute modified versions of this document under the",
        "# conditions for verbatim copying, provided that the entire resulting derived work is",
        "# distributed under the terms of a permission notice identical to this one.",
    ]
    return "\n".join(header) + "\n" + "\n\n".join(out) + "\n"


def manifesto():
    with gzip.open(MANIFESTO, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    # Skip doc-debian's preface and "Appendix" banner: start at the title.
    start = next(i for i, l in enumerate(lines) if l.strip() == "The Debian Linux Manifesto"
                 and i > 0 and lines[i - 1].strip() != "Appendix")
    body = [l for l in lines[start:] if not re.fullmatch(r"\s*(=+|\*+)\s*", l)]
    out = [re.sub(r"\s{2,}", " ", p) for p in paragraphs(body)]
    header = [
        "# Source: Debian package doc-debian 11.3+nmu1, /usr/share/doc/debian/debian-manifesto.gz",
        "# (reflowed, heading underlines removed; tests/data/text/make_texts.py).",
        "# The Debian Linux Manifesto, written by Ian A. Murdock, revised 01/06/94.",
        "# Copyright (c) 1997-2004 Software in the Public Interest, Inc. This material may be",
        "# distributed only subject to the terms and conditions set forth in the Open Publication",
        "# License, v1.0 or later (as stated in /usr/share/doc/doc-debian/copyright).",
    ]
    return "\n".join(header) + "\n" + "\n\n".join(out) + "\n"


def main():
    with open(os.path.join(HERE, "debian-faq-ch1.txt"), "w", encoding="utf-8") as f:
        f.write(faq_chapter1())
    with open(os.path.join(HERE, "debian-manifesto.txt"), "w", encoding="utf-8") as f:
        f.write(manifesto())
    shutil.copyfile(GPL3, os.path.join(HERE, "gpl-3.txt"))


if __name__ == "__main__":
    main()
