"""SVG written as text: the pictures a partition carries (lineage graph, health over time).

Drawing a picture by hand costs about a millisecond where matplotlib costs about a second
(figure, layout passes, PNG encoding), which at 1,000 patterns a run is the difference between
seconds and a quarter of an hour. The browser lays out the text, so sizes are CSS pixels
(16 px is 12 pt) and widths of text are estimated (`text_width`) only to leave room for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"
_NARROW, _WIDE = set("fijlrtI1.,:;'|!() "), set("mwMW@%")


def text_width(text: str, size: float) -> float:
    """Pixels `text` takes at `size` px in a sans-serif font, rounded up a little (estimated per
    character: narrow, wide, capital or other)."""
    em = sum(0.32 if ch in _NARROW else 0.9 if ch in _WIDE else 0.7 if ch.isupper() else 0.6 for ch in text)
    return em * size


def escape(text: str) -> str:
    """`text` inside an SVG element or attribute: XML's special characters as entities. (Names from
    a source go through lib.lineage.render.visible_text first, so invisible characters show.)"""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def text(x: float, y: float, content: str, size: float = 13, anchor: str = "start", fill: str = "#212121",
         extra: str = "") -> str:
    """One line of text, baseline at y; `content` is escaped here."""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{extra}>'
            f"{escape(content)}</text>")


def path(d: str, stroke: str, width: float = 1.0, dash: str | None = None, fill: str = "none", extra: str = "") -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<path d="{d}" stroke="{stroke}" stroke-width="{width}" fill="{fill}"{dashes}{extra}/>'


def arrow_markers(colours: Iterable[str]) -> str:
    """A filled arrowhead per colour, id `arrow-<colour without #>` (markers take no colour from
    the line that uses them in SVG 1.1)."""
    return "<defs>" + "".join(
        f'<marker id="arrow-{c.lstrip("#")}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="10" markerHeight="10" '
        f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0 0L10 5L0 10z" fill="{c}"/></marker>'
        for c in sorted(set(colours))
    ) + "</defs>"


def document(width: float, height: float, body: Iterable[str]) -> str:
    """A standalone SVG of `width` x `height` px on white, text in `FONT`."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">'
            f'<rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>')


def data_url(svg: str) -> str:
    """The SVG as a `data:` URL: percent-encoded, so no blank, bracket or `#` ends it in markdown."""
    return "data:image/svg+xml," + quote(svg, safe=" =:/,.;'-_")
