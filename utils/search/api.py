"""The HTTP surface of ``search.py serve`` that needs no model: the parameters of a request, checked, and the
guards every request passes (the Host header, the origin of a costly request, the security headers).

A bad request is a ``RequestError`` with its status; ``utils/search/server.py`` answers it as
``{"error": "one line"}``.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Iterable

from utils.errors import DUCHError
from utils.search.query import DEFAULT_SHORTLIST, ROW_MODALITIES, TARGETS
from utils.search.segments import MAX_NPROBE

DEFAULT_HOST = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_K = 1000
MAX_SHORTLIST = 100_000
SEARCH_PARAMETERS = ("text", "row", "modality", "target", "k", "rerank", "shortlist", "nprobe", "class", "split")
REPEATABLE = ("class", "split")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class RequestError(DUCHError):
    """A request the server refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------------------
# parameters


@dataclass
class SearchParams:
    """The checked parameters of one search request."""

    text: str | None = None
    row: int | None = None
    modality: str | None = None
    target: str = "images"
    k: int = 10
    rerank: bool = False
    shortlist: int = DEFAULT_SHORTLIST
    nprobe: int | None = None
    classes: list[str] | None = None
    splits: list[str] | None = None
    given: list[str] = field(default_factory=list)


def request_int(name: str, value: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise RequestError(f"{name} must be an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}"
        raise RequestError(f"{name} must be {bounds}, got {number}")
    return number


def check_parameters(items: Iterable[tuple[str, str]], allowed: Iterable[str], what: str) -> dict[str, list[str]]:
    """The request's parameters by name; an unknown or repeated (where not repeatable) one is refused."""
    allowed = tuple(allowed)
    values: dict[str, list[str]] = {}
    for name, value in items:
        if name not in allowed:
            raise RequestError(f"unknown parameter {name!r}; {what} takes: {', '.join(allowed) if allowed else 'none'}")
        values.setdefault(name, []).append(value)
    for name, given in values.items():
        if len(given) > 1 and name not in REPEATABLE:
            raise RequestError(f"parameter {name!r} is given {len(given)} times; give it once")
    return values


def parse_search_params(items: Iterable[tuple[str, str]], image: bool = False) -> SearchParams:
    """Checked search parameters: exactly one of text and row (none with an uploaded ``image``)."""
    values = check_parameters(items, SEARCH_PARAMETERS, "a search")
    one = {name: v[0] for name, v in values.items() if name not in REPEATABLE}
    p = SearchParams(given=sorted(values))
    if image:
        if "text" in one or "row" in one:
            raise RequestError("a POST to /api/search carries an image as its body; search by text or row with GET")
    elif ("text" in one) == ("row" in one):
        raise RequestError("give text=SENTENCE or row=N (with modality=image or caption), not "
                           + ("both" if "text" in one else "neither"))
    if "text" in one:
        p.text = one["text"]
        if not p.text.strip():
            raise RequestError("empty text query; give a sentence, e.g. text=a river next to green fields")
    if "row" in one:
        p.row = request_int("row", one["row"], 0)
        p.modality = one.get("modality", "image")
        if p.modality not in ROW_MODALITIES:
            raise RequestError(f"modality must be image or caption, got {p.modality!r}")
    elif "modality" in one:
        raise RequestError("modality goes with row=N (which stored rows)")
    p.target = one.get("target", "images")
    if p.target not in TARGETS:
        raise RequestError(f"target must be images or captions, got {p.target!r}")
    if "k" in one:
        p.k = request_int("k", one["k"], 1, MAX_K)
    rerank = one.get("rerank", "0").strip().lower()
    if rerank not in TRUE + FALSE:
        raise RequestError(f"rerank must be 1 or 0 (true or false), got {one['rerank']!r}")
    p.rerank = rerank in TRUE
    if "shortlist" in one:
        p.shortlist = request_int("shortlist", one["shortlist"], 1, MAX_SHORTLIST)
    if "nprobe" in one:
        p.nprobe = request_int("nprobe", one["nprobe"], 1, MAX_NPROBE)
    for name, attr in (("class", "classes"), ("split", "splits")):
        if name in values:
            names = [v.strip() for v in values[name]]
            if not all(names):
                raise RequestError(f"empty {name} name; give {name}=NAME (repeat it for several)")
            setattr(p, attr, names)
    return p


def _host_of(header: str) -> str:
    """The host name of a Host header (``name``, ``name:port``, ``[::1]:port``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class GuardMiddleware:
    """Refuses requests whose Host header is not a name this server was started on (a page elsewhere that
    rebinds its DNS name to 127.0.0.1 cannot read the archive), and adds security headers to every answer."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY"),
               (b"content-security-policy", b"default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                                            b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'")]

    def __init__(self, app, allowed_hosts: set[str] | None):
        self.app, self.allowed = app, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_of(host) not in self.allowed:
                from starlette.responses import JSONResponse

                answer = JSONResponse({"error": f"host {host!r} is not served here (this server answers to "
                                                f"{', '.join(sorted(self.allowed))})"}, status_code=421)
                return await answer(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def check_same_origin(headers) -> None:
    """A costly request that a browser sends with an Origin header must come from this server's own page: a
    page of another origin cannot make the server decode and encode images for it."""
    from urllib.parse import urlsplit

    origin = headers.get("origin")
    if origin is None:
        return  # curl, the Python client: no browser, no other page
    host = headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise RequestError(f"a request from the page at {origin!r} is refused: uploads come from this server's own "
                           f"page or from a program", 403)


def allowed_hosts(host: str) -> set[str] | None:
    """Host names requests may carry: the loopback names, and ``host`` itself; None (any) for 0.0.0.0 / ::."""
    if host in ("0.0.0.0", "::", ""):
        return None
    return {*LOCAL_HOSTS, host.lower().strip("[]")}


# an upload is decoded only when its header shows at most this many pixels (a query image is resized to 224 x 224
# anyway): a 250 KB PNG can declare 90 megapixels, 690 MB once decoded
MAX_UPLOAD_PIXELS = 36_000_000
# image formats an upload may be: PIL's raster decoders only (PIL's EPS plugin would run Ghostscript)
UPLOAD_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "GIF": ".gif"}


def decode_upload(data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> tuple[str, tuple[int, int]]:
    """(format, size) of an uploaded image, fully decoded; anything else is a RequestError. The pixel count is
    read from the header and checked before anything is decoded. It runs in the service's upload pool
    (``SearchService.search_image_queued``), so at most DECODE_SLOTS of the server decode at once."""
    from PIL import Image

    if not data:
        raise RequestError("empty upload: send the image file as the request body (curl --data-binary @FILE)")
    saved = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            with Image.open(io.BytesIO(data), formats=list(UPLOAD_FORMATS)) as image:  # reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    raise Image.DecompressionBombError(f"{width} x {height}")
                image.load()
                return image.format, image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(f"the uploaded image has too many pixels (over {max_pixels:,}); send a smaller one "
                           f"(it is resized to 224 x 224 anyway)", 413) from None
    except Exception as err:  # noqa: BLE001 (any decoder failure: the upload is not an image)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RequestError(f"the upload is not a readable image ({', '.join(UPLOAD_FORMATS)}): {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
