"""Which library reads web pages and PDFs best: measured on saved pages and PDFs made here.

    pip install -e ".[bench,test]" && python benchmarks/extraction.py [--out DIR]

Makes news pages from real article text (the bundled article, docs/example-article.txt and, when
../shared/data/squad is there, two SQuAD articles), each wrapped the way news sites wrap one: a
menu of links, a cookie banner, ads, inline scripts and JSON-LD, "related stories", a newsletter
box, readers' comments and a footer; in two layouts (an <article> element, and bare <div>s). Then
PDFs of the same articles: printed by Chromium from those pages (headers, footers and page numbers
on every page, as a browser's "Save as PDF" makes them) when Debian's chromium is installed, and
written by fpdf2 with a running header and footer.

For each extractor it prints, over all pages or PDFs: the share of the article's sentences found
whole in its text (what a citation needs), the share of boilerplate snippets that leaked into it,
the share of paragraph starts that begin a line, and the time per file. The files are kept in
--out for a look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.extraction import join_pages  # noqa: E402

BOILERPLATE = [
    "Subscribe to our newsletter",
    "We use cookies to improve your experience",
    "Advertisement: Save 40% on premium",
    "Most read this week",
    "Sign in to comment",
    "All rights reserved",
    "window.dataLayer",
    "Breaking: markets rally",
    "I disagree with this article entirely",
    "Terms of use",
]


def articles() -> list[dict]:
    out = []
    seed = (ROOT / "seeds" / "pentagon-ukraine-long-range-strikes.txt").read_text(encoding="utf-8").split("\n")
    out.append({"name": "pentagon", "title": seed[0], "paragraphs": [p for p in seed[1:] if p.strip()]})
    example = (ROOT / "docs" / "example-article.txt").read_text(encoding="utf-8").split("\n")
    lines = [p for p in example if p.strip()]
    out.append({"name": "library", "title": lines[0], "paragraphs": lines[1:]})
    squad = ROOT.parent / "shared" / "data" / "squad" / "squad-train-38.json"
    if squad.exists():
        for a in json.loads(squad.read_text(encoding="utf-8"))["data"][:2]:
            paras = [p["context"] for p in a["paragraphs"][:6]]
            out.append({"name": a["title"].lower(), "title": a["title"].replace("_", " "), "paragraphs": paras})
    return out


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def page(article: dict, semantic: bool) -> str:
    sections = ["World", "Politics", "Business", "Tech", "Sport", "Opinion"]
    menu = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in sections)
    related = "".join(f'<li><a href="/r{i}">Breaking: markets rally as story {i} unfolds</a></li>' for i in range(6))
    body = "".join(f"<p>{esc(p)}</p>" for p in article["paragraphs"])
    comments = (
        "<div class='comments'><h3>Comments</h3><p>I disagree with this article entirely.</p>"
        "<p>Sign in to comment.</p></div>"
    )
    wrap = ("<article>", "</article>") if semantic else ("<div class='c1'><div class='c2'>", "</div></div>")
    head = (
        f"<head><meta charset='utf-8'><title>{esc(article['title'])} | The Daily Example</title>"
        f"<meta property='og:title' content='{esc(article['title'])}'>"
        "<meta property='article:published_time' content='2025-09-02T08:00:00Z'>"
        f"<link rel='canonical' href='https://news.example.com/{article['name']}'>"
        "<script>window.dataLayer = window.dataLayer || []; function track(){}</script>"
        '<script type=\'application/ld+json\'>{"@type": "NewsArticle"}</script></head>'
    )
    return (
        f"<!doctype html><html lang='en'>{head}<body>"
        "<div id='cookie'>We use cookies to improve your experience. <button>Accept</button></div>"
        f"<header><nav><ul>{menu}</ul></nav></header>"
        "<div class='ad'>Advertisement: Save 40% on premium membership today</div>"
        f"<main>{wrap[0]}<h1>{esc(article['title'])}</h1><p class='byline'>By A. Reporter, 2 September 2025</p>"
        f"{body}{wrap[1]}"
        f"<aside><h2>Most read this week</h2><ul>{related}</ul></aside>"
        "<div class='newsletter'>Subscribe to our newsletter for the day's top stories.</div>"
        f"{comments}</main>"
        "<footer><a href='/terms'>Terms of use</a> · © 2025 The Daily Example. All rights reserved.</footer>"
        "<script>track('page');</script></body></html>"
    )


def fpdf_pdf(article: dict) -> bytes:
    from fpdf import FPDF

    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

    class Printed(FPDF):
        def header(self) -> None:
            self.set_font(self.face, size=8)
            self.cell(0, 5, f"The Daily Example · {article['title'][:60]}", new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(self.face, size=8)
            self.cell(0, 5, f"https://news.example.com/{article['name']}    {self.page_no()}/{{nb}}")

    pdf = Printed()
    pdf.face = "Helvetica"
    if font.exists():
        pdf.add_font("DejaVu", fname=str(font))
        pdf.face = "DejaVu"
    safe = (lambda t: t) if font.exists() else (lambda t: t.encode("latin-1", "replace").decode("latin-1"))
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font(pdf.face, size=16)
    pdf.multi_cell(0, 8, safe(article["title"]), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.face, size=11)
    for p in article["paragraphs"]:
        pdf.ln(3)
        pdf.multi_cell(0, 5.5, safe(p), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def chromium_pdfs(pages: dict[str, Path]) -> dict[str, bytes]:
    """Each page printed by Chromium with its header and footer (title, date, URL, page x/y)."""
    binary = os.environ.get("QA_CHROMIUM") or shutil.which("chromium")
    if not binary:
        return {}
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox", "--headless"])
        tab = browser.new_page()
        for name, path in pages.items():
            tab.goto(path.as_uri())
            out[name] = tab.pdf(display_header_footer=True, format="A4", margin={"top": "2cm", "bottom": "2cm"})
        browser.close()
    return out


def html_extractors() -> dict[str, Callable[[bytes], str]]:
    import trafilatura
    from lxml import html as lxml_html

    def justext_text(raw: bytes) -> str:
        import justext

        parts = justext.justext(raw, justext.get_stoplist("English"))
        return "\n".join(p.text for p in parts if not p.is_boilerplate)

    return {
        "trafilatura (as qa runs it)": lambda raw: trafilatura.extract(raw, include_comments=False) or "",
        "trafilatura, favor_precision": lambda raw: (
            trafilatura.extract(raw, include_comments=False, favor_precision=True) or ""
        ),
        "trafilatura, favor_recall": lambda raw: (
            trafilatura.extract(raw, include_comments=False, favor_recall=True) or ""
        ),
        "jusText": justext_text,
        "lxml text_content (everything)": lambda raw: lxml_html.fromstring(raw).text_content(),
    }


def pdf_extractors() -> dict[str, Callable[[bytes], list[str]]]:
    import io

    def pypdf_pages(raw: bytes, mode: str = "plain") -> list[str]:
        from pypdf import PdfReader

        return [pg.extract_text(extraction_mode=mode) or "" for pg in PdfReader(io.BytesIO(raw)).pages]

    def plumber_pages(raw: bytes) -> list[str]:
        import pdfplumber

        with pdfplumber.open(io.BytesIO(raw)) as pdf:
            return [pg.extract_text() or "" for pg in pdf.pages]

    def pdfium_pages(raw: bytes) -> list[str]:
        import pypdfium2

        doc = pypdfium2.PdfDocument(raw)
        return [doc[i].get_textpage().get_text_range() for i in range(len(doc))]

    found = {"pypdf (as qa runs it)": pypdf_pages, "pypdf, layout mode": lambda r: pypdf_pages(r, "layout")}
    for name, fn, module in (("pdfplumber", plumber_pages, "pdfplumber"), ("pypdfium2", pdfium_pages, "pypdfium2")):
        try:
            __import__(module)
            found[name] = fn
        except ImportError:
            pass
    return found


def flat(text: str) -> str:
    return " ".join(text.split())


def sentences(paragraphs: list[str]) -> list[str]:
    return [s for p in paragraphs for s in re.split(r"(?<=[.!?”])\s+(?=[A-Z“])", p) if len(s) > 20]


def score(text: str, article: dict) -> tuple[int, int, int, int, int, int]:
    """(sentences found, sentences, boilerplate leaked, boilerplate, paragraph starts at a line start, paragraphs)."""
    whole = flat(text)
    sents = sentences(article["paragraphs"])
    found = sum(flat(s) in whole for s in sents)
    leaked = sum(b in text for b in BOILERPLATE)
    starts = {flat(line)[:40] for line in text.split("\n")}
    para = sum(flat(p)[:40] in starts for p in article["paragraphs"])
    return found, len(sents), leaked, len(BOILERPLATE), para, len(article["paragraphs"])


def row(name: str, results: list[tuple[tuple[int, ...], float]]) -> str:
    totals = [sum(r[0][i] for r in results) for i in range(6)]
    ms = 1000 * sum(t for _, t in results) / len(results)
    pct = lambda a, b: f"{100 * a / b:.1f}%" if b else "—"  # noqa: E731
    return (
        f"| {name} | {pct(totals[0], totals[1])} | {pct(totals[2], totals[3])} | "
        f"{pct(totals[4], totals[5])} | {ms:.0f} |"
    )


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="keep the pages and PDFs here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="qa-extraction-"))
    out.mkdir(parents=True, exist_ok=True)
    arts = articles()
    pages: dict[str, Path] = {}
    for a in arts:
        for semantic in (True, False):
            path = out / f"{a['name']}-{'article' if semantic else 'divs'}.html"
            path.write_text(page(a, semantic), encoding="utf-8")
            pages[path.name] = path
    by_name = {p: next(a for a in arts if p.startswith(a["name"] + "-")) for p in pages}
    print(f"{len(pages)} pages, {len(arts)} articles, in {out}; CPU: {cpu()}; {time.strftime('%Y-%m-%d')}\n")
    print(
        "| web page extractor | sentences found whole | boilerplate leaked | paragraphs on their own line | ms/page |"
    )
    print("|---|---|---|---|---|")
    for name, fn in html_extractors().items():
        results = []
        for p, path in pages.items():
            text, seconds = timed(lambda fn=fn, path=path: fn(path.read_bytes()))
            results.append((score(str(text), by_name[p]), seconds))
        print(row(name, results))
    pdfs = {f"{a['name']}-fpdf2.pdf": (fpdf_pdf(a), a) for a in arts}
    printed = chromium_pdfs({k: v for k, v in pages.items() if k.endswith("-article.html")})
    pdfs |= {k.replace(".html", "-chromium.pdf"): (raw, by_name[k]) for k, raw in printed.items()}
    for name, (raw, _) in pdfs.items():
        (out / name).write_bytes(raw)
    kinds = "fpdf2" + (" and Chromium's print" if printed else "")
    print(f"\n{len(pdfs)} PDFs ({kinds}); each extractor's pages joined by qa's join_pages (raw lines: 2nd row)\n")
    print(
        "| PDF extractor | sentences found whole | running header/footer leaked | paragraphs on their own line", end=""
    )
    print(" | ms/PDF |")
    print("|---|---|---|---|---|")
    for name, fn in pdf_extractors().items():
        joined, raw_rows = [], []
        for raw, a in pdfs.values():
            got, seconds = timed(lambda fn=fn, raw=raw: fn(raw))
            # The running header and footer only: fpdf2's "The Daily Example · title" and URL line,
            # Chromium's date/title header ("title | The Daily Example") and file URL footer. The
            # page's own copyright line, printed by Chromium as content, is not a running line.
            leaks = ("The Daily Example ·", "news.example.com", "| The Daily Example", "file://")
            for target, text in ((joined, join_pages(list(got))), (raw_rows, "\n".join(got))):
                s = score(text, a)
                target.append(((s[0], s[1], sum(x in text for x in leaks), len(leaks) // 2, s[4], s[5]), seconds))
        print(row(name, joined))
        print(row(f"{name}, lines as extracted", raw_rows))


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
