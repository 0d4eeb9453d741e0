"""The HTTP side of ``search.py serve``: the FastAPI app, its routes, the page's static files.

``create_app`` puts a ``SearchService`` (``utils/search/server.py``) behind the endpoints listed there; the
parameters and guards of a request are in ``utils/search/api.py``.
"""
import sys
from pathlib import Path

from utils.errors import DUCHError
from utils.search.api import (
    DEFAULT_HOST,
    GuardMiddleware,
    RequestError,
    allowed_hosts,
    check_parameters,
    check_same_origin,
    parse_search_params,
    request_int,
)

# no ``from __future__ import annotations`` here: FastAPI reads the routes' annotations (Request) as objects

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# content types an image upload may carry; a "simple" type (text/plain, forms) is what a page of any other origin
# can POST without the browser asking first, so those are refused
UPLOAD_CONTENT_TYPES = ("application/octet-stream", "image/")


def create_app(service, host: str = DEFAULT_HOST):
    """The FastAPI app of a loaded ``utils.search.server.SearchService`` (not imported here: that module imports
    this one): the page, the API and the JSON errors."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response

    app = FastAPI(title="DUCH search", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    static = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix]) for p in sorted(STATIC_DIR.iterdir())
              if p.is_file() and p.suffix in STATIC_TYPES}

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(DUCHError)
    async def user_error(request: Request, err: DUCHError):
        return error(str(err), getattr(err, "status", 400))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error(f"{where}: {first.get('msg', 'invalid value')}", 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = f"not found: {request.url.path}" if err.status_code == 404 else str(err.detail)
        return error(message, err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        print(f"error answering {request.method} {request.url.path}: {type(err).__name__}: {err}", file=sys.stderr)
        return error(f"internal error ({type(err).__name__}); the request failed, the server goes on", 500)

    def no_parameters(request: Request) -> None:
        check_parameters(request.query_params.multi_items(), (), request.url.path)

    @app.get("/", include_in_schema=False)
    def page(request: Request):
        body, kind = static["index.html"]
        return Response(body, media_type=kind, headers={"cache-control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        if name not in static:
            raise RequestError(f"not found: /static/{name}", 404)
        body, kind = static[name]
        return Response(body, media_type=kind, headers={"cache-control": "no-cache"})

    @app.get("/api/health")
    def health(request: Request):
        no_parameters(request)
        return JSONResponse(service.health())

    @app.get("/api/index")
    def describe(request: Request):
        no_parameters(request)
        return JSONResponse(service.describe())

    @app.get("/api/search")
    def search_get(request: Request):
        """Search by text=SENTENCE or row=N&modality=image|caption (and target, k, rerank, shortlist, nprobe,
        class, split)."""
        params = parse_search_params(request.query_params.multi_items())
        return JSONResponse(service.search(params))

    @app.post("/api/search")
    async def search_post(request: Request):
        """Search by an image: the request body is the image file; the parameters are in the URL, as for GET."""
        params = parse_search_params(request.query_params.multi_items(), image=True)
        check_same_origin(request.headers)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind.startswith(UPLOAD_CONTENT_TYPES):
            raise RequestError("send the image file itself as the request body with Content-Type "
                               "application/octet-stream or image/... (curl --data-binary @FILE -H 'Content-Type: "
                               f"application/octet-stream'), not {kind or 'no content type'}", 415)
        limit = service.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the upload is {int(declared):,} bytes; the limit is {limit:,}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"the upload is over the limit of {limit:,} bytes", 413)
            chunks.append(chunk)
        return JSONResponse(await service.search_image_queued(params, b"".join(chunks)))

    @app.get("/api/thumbnail/{row}")
    def thumbnail(row: str, request: Request):
        """JPEG thumbnail of an image row of the index."""
        no_parameters(request)
        data = service.thumbnail(request_int("thumbnail row", row, 0))
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    app.state.service = service
    return GuardMiddleware(app, allowed_hosts(host))
