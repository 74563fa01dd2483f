"""HTML building blocks of ``report.html``: one self-contained page.

The page loads nothing from elsewhere (no scripts, fonts or style sheets from the network, and
every figure embedded as a base64 ``data:`` URI), so it can be mailed or archived on its own.
Each image also names the PNG it was made from (``data-file``, relative to the page), which stays
next to the page for other uses.  Data-flow graphs are embedded as SVG too (a ``<picture>``
whose PNG is the fallback), so a reader can zoom into a large network without losing its labels.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 12px; }
th, td { padding: 2px 8px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
td.arch { text-align: left; font-family: monospace; font-size: 11px; max-width: 40em;
          overflow-wrap: anywhere; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.graphs { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.graphs figure { flex: 0 1 auto; max-width: 100%; }
figcaption { font-size: 12px; color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { flex: 1 1 30em; }
.note { color: #a40; }
"""


def figure(page_dir: Path, file: Path, caption: str) -> str:
    """``file`` embedded as a data URI; ``data-file`` gives its path relative to the page."""
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    name = file.relative_to(page_dir).as_posix()
    return (f'<figure><img src="data:image/png;base64,{data}" data-file="{escape(name)}" '
            f'alt="{escape(caption)}"><figcaption>{escape(caption)} '
            f'(<code>{escape(name)}</code>)</figcaption></figure>')


def graph_figure(page_dir: Path, png: Path, svg: Path, caption: str) -> str:
    """A data-flow graph: the SVG embedded as the picture's preferred source, the PNG as its
    fallback (and for ``data-file``), and a link to the SVG file to open it at full size."""
    vector = base64.b64encode(svg.read_bytes()).decode("ascii")
    raster = base64.b64encode(png.read_bytes()).decode("ascii")
    name, svg_name = (f.relative_to(page_dir).as_posix() for f in (png, svg))
    return (f'<figure><picture><source type="image/svg+xml" '
            f'srcset="data:image/svg+xml;base64,{vector}">'
            f'<img src="data:image/png;base64,{raster}" data-file="{escape(name)}" '
            f'alt="{escape(caption)}"></picture><figcaption>{escape(caption)} '
            f'(<a href="{escape(svg_name)}">{escape(svg_name)}</a> to zoom)</figcaption>'
            f'</figure>')


def table(headers: list[str], rows: list[list], classes: dict[int, str] | None = None) -> str:
    """A table of escaped cells; ``classes`` gives a CSS class per column position."""
    classes = classes or {}
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{classes[i]}">{escape(str(cell))}</td>' if i in classes
                         else f"<td>{escape(str(cell))}</td>" for i, cell in enumerate(row))
        + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def paragraph(text: str, note: bool = False) -> str:
    return f'<p class="note">{escape(text)}</p>' if note else f"<p>{escape(text)}</p>"


def section(title: str, *parts: str) -> str:
    return f"<h2>{escape(title)}</h2>\n" + "\n".join(parts)


def page(title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n")
