"""The results page of one query: a self-contained HTML file (thumbnails embedded as base64 JPEG)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from utils.data.images import load_image
from utils.errors import DUCHError
from utils.io import write_text

THUMBNAIL_SIZE = 192

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222;
       background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
.meta { color: #666; font-size: 13px; margin-bottom: 16px; }
.query { display: flex; gap: 16px; align-items: center; background: #fff; border: 1px solid #ddd; border-radius: 8px;
         padding: 12px 16px; margin-bottom: 20px; }
.query .text { font-size: 18px; font-style: italic; }
.query .qimg { width: 160px; flex-shrink: 0; }
.query .qimg img, .query .qimg .thumb-missing { width: 160px; height: 160px; object-fit: cover; border-radius: 4px;
                                               display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 14px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 8px; font-size: 13px; }
.card img, .thumb-missing { width: 100%; aspect-ratio: 1 / 1; object-fit: cover; border-radius: 4px; display: block; }
.thumb-missing { background: #eee; color: #999; display: flex; align-items: center; justify-content: center; }
.rank { font-weight: 600; }
.dist { float: right; color: #555; font-variant-numeric: tabular-nums; }
.file { font-family: ui-monospace, monospace; word-break: break-all; }
.cls { color: #0a5; }
.caption { color: #444; margin-top: 4px; }
"""


def thumbnail_data_uri(path: str | Path | None, size: int = THUMBNAIL_SIZE, roots=None) -> str | None:
    """A JPEG thumbnail of the image as a data: URI, or None when the file is absent, unreadable, or (given
    ``roots``) resolves outside them when it is read."""
    if not path or not Path(path).is_file():
        return None
    try:
        image = load_image(path, roots=roots)
    except DUCHError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_tag(path, alt: str, roots=None) -> str:
    uri = thumbnail_data_uri(path, roots=roots)
    if uri is None:
        return '<div class="thumb-missing">no image</div>'
    return f'<img src="{uri}" alt="{html.escape(alt, quote=True)}">'


def render_page(result: dict, title: str = "DUCH search", about: str = "", roots=None) -> str:
    """The HTML of one query's results (``utils.search.query.search`` output). ``roots``: the index's image
    folders, which every result image must resolve into when it is read (the query image is the user's)."""
    q = result["query"]
    esc = html.escape
    if q["kind"] == "text":
        query_html = f'<div class="text">&ldquo;{esc(q["text"])}&rdquo;</div>'
    elif q["kind"] == "image":
        query_html = (f'<div class="qimg">{_image_tag(q["path"], "query image")}</div>'
                      f'<div class="file">{esc(q["path"])}</div>')
    else:
        query_html = f'<div class="file">{esc(q["modality"])} row {q["row"]}</div>'
        if q.get("query_path"):
            query_html = f'<div class="qimg">{_image_tag(q["query_path"], "query image")}</div>' + query_html
        if q.get("query_caption"):
            query_html += f'<div class="text">&ldquo;{esc(q["query_caption"])}&rdquo;</div>'
    cards = []
    for r in result["results"]:
        dist = f"Hamming {r['distance']}" + (f" &middot; cos {r['cosine']:.3f}" if "cosine" in r else "")
        caption = f'<div class="caption">{esc(r["caption"])}</div>' if r.get("caption") else ""
        cards.append(
            f'<div class="card">{_image_tag(r.get("path"), str(r.get("filename")), roots)}'
            f'<div><span class="rank">#{r["rank"]}</span><span class="dist">{dist}</span></div>'
            f'<div class="file">{esc(str(r.get("filename")))} (row {r["row"]})</div>'
            f'<div class="cls">{esc(str(r.get("class")))}{" &middot; " + esc(r["split"]) if r.get("split") else ""}'
            f'</div>{caption}</div>'
        )
    meta = (f"{len(result['results'])} nearest {esc(q['target'])} by Hamming distance"
            + (", re-ranked by cosine of the continuous outputs" if q.get("rerank") else "") + " &middot; ties by row"
            + (f" &middot; {esc(about)}" if about else ""))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1><div class=\"meta\">{meta}</div>"
        f"<div class=\"query\"><strong>Query</strong>{query_html}</div>"
        f"<div class=\"grid\">{''.join(cards)}</div></body></html>\n"
    )


def write_page(path: str | Path, result: dict, title: str = "DUCH search", about: str = "", roots=None) -> None:
    write_text(path, render_page(result, title, about, roots))
