"""The SVG pictures in a markdown value, parsed: (alt text, the SVG's root element)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote

SVG_IMAGE = re.compile(r"!\[((?:\\.|[^\]\\])*)\]\(<data:image/svg\+xml,([^<>]*)>\)")
NS = "{http://www.w3.org/2000/svg}"


def svg_pictures(markdown: str) -> list[tuple[str, ET.Element]]:
    """Every SVG image of `markdown`; ElementTree refuses one that is not well-formed XML."""
    return [(alt, ET.fromstring(unquote(url))) for alt, url in SVG_IMAGE.findall(markdown)]


def texts(root: ET.Element) -> list[str]:
    """The text the picture shows, element by element, entities resolved."""
    return [t.text or "" for t in root.iter(f"{NS}text")]
