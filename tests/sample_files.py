"""Articles as people have them, made for the tests: a saved news page and a PDF, good and bad."""

from __future__ import annotations

import io
from pathlib import Path

TITLE = "Harbour bridge reopens after repairs"
DATE = "2025-09-02"
URL = "https://news.example.com/harbour-bridge"
PARAGRAPHS = [
    "The harbour bridge reopened to traffic on Tuesday after eight months of repairs that cost the city "
    "12 million euros.",
    "The repairs were led by the engineer Amara Lindgren, whose team replaced the cables that hold the "
    "main span. Lindgren said the old cables had corroded faster than any inspection had predicted.",
    "Ferries carried commuters across the harbour while the bridge was closed, and the ferry company "
    "said it had moved about 9,000 passengers a day.",
]
PDF_PARAGRAPHS = [
    "The city library will stay open until midnight during the exam season, the council announced on Friday.",
    "The late opening was proposed by the librarian Tomasz Berg, who said students had asked for quiet "
    "places to study after the cafes close. The council agreed to pay for two extra security guards.",
    "The library expects about 400 visitors each evening, most of them students from the university.",
]
BOILERPLATE = ("Subscribe to our newsletter", "We use cookies", "Most read this week", "All rights reserved")


def news_page(paragraphs: list[str] = PARAGRAPHS, title: str = TITLE) -> bytes:
    """A page as a browser saves it: the article inside menus, ads, scripts, related links and a footer."""
    menu = "".join(f'<li><a href="/{w}">{w}</a></li>' for w in ("World", "Politics", "Business", "Sport"))
    related = "".join(f'<li><a href="/r{i}">Story {i}: markets rally again</a></li>' for i in range(5))
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title} | The Daily Example</title><meta property='og:title' content='{title}'>"
        f"<meta property='article:published_time' content='{DATE}T08:00:00Z'>"
        f"<link rel='canonical' href='{URL}'>"
        "<script>window.dataLayer = []; function track(){}</script></head><body>"
        "<div id='cookie'>We use cookies to improve your experience. <button>Accept</button></div>"
        f"<header><nav><ul>{menu}</ul></nav></header><div class='ad'>Advertisement: save 40% today</div>"
        f"<main><article><h1>{title}</h1>{body}</article>"
        f"<aside><h2>Most read this week</h2><ul>{related}</ul></aside>"
        "<div>Subscribe to our newsletter for the day's top stories.</div></main>"
        "<footer>© 2025 The Daily Example. All rights reserved.</footer><script>track();</script></body></html>"
    ).encode()


def links_only_page() -> bytes:
    """A page with no article: a section front of links, as a consent wall or an app shell leaves it."""
    links = "".join(f'<li><a href="/s{i}">Section {i}</a></li>' for i in range(20))
    return (
        f"<!doctype html><html><head><title>Home</title></head><body><nav><ul>{links}</ul></nav></body></html>".encode()
    )


def text_pdf(paragraphs: list[str] = PDF_PARAGRAPHS, title: str | None = "Library opens late for exams") -> bytes:
    """A PDF with a text layer, a running header and a page-number footer (fpdf2's core font)."""
    from fpdf import FPDF

    class Printed(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", size=8)
            self.cell(0, 5, "The Daily Example - City news", new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", size=8)
            self.cell(0, 5, f"{self.page_no()}")

    pdf = Printed()
    if title:
        pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for p in paragraphs:
        pdf.multi_cell(0, 6, p, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    return bytes(pdf.output())


def scanned_pdf() -> bytes:
    """A PDF with an image of a page and no text layer, as a scanner makes it."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(image).text((10, 10), "A scanned page of text", fill="black")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(image, x=10, y=10, w=180)
    return bytes(pdf.output())


def encrypted_pdf(password: str = "secret") -> bytes:
    """A PDF that opens only with a password."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(text_pdf())).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
