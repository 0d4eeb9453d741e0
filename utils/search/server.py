"""``search.py serve``: an index kept in memory with its models, answering searches over HTTP, and a page at ``/``.

``SearchService`` holds the index, the run's networks and the query encoders, loaded once; it parses and
checks the parameters of a request and answers with the same JSON as ``search.py query --json``. ``create_app``
puts it behind a FastAPI app (served by uvicorn, ``serve``):

    GET  /                       the search page (utils/search/static/: plain HTML, CSS and JavaScript)
    GET  /api/health             {"status": "ok", ...}
    GET  /api/index              bits, counts, classes, splits, encoders, checkpoint, limits
    GET  /api/search?text=...    a sentence (or ?row=N&modality=image|caption: "more like this")
    POST /api/search?k=...       an image: the request body is the image file itself
    GET  /api/thumbnail/{row}    a JPEG thumbnail of an image row of the index (by row number only)

Common search parameters: target (images|captions), k, rerank, shortlist, nprobe, class and split (repeatable:
only results of those classes / splits, applied before the top k is cut). A bad request gets a 4xx JSON
``{"error": "one line"}``; an unexpected failure a 500 of the same form, and the server goes on answering.
The parameters and the guards of a request are in ``utils/search/api.py``.

Models: row queries use no model; a text query runs the text encoder and the text net, under a lock of its
own (tokenizers are not thread-safe); an image query the image encoder and the image net under another, so
a slow image never holds up a sentence or a row. Uploads are decoded and encoded in a pool of their own
(DECODE_SLOTS threads, at most MAX_WAITING_UPLOADS waiting), after their pixel count is read from the
header; a burst of them leaves FastAPI's threads to rows, sentences and thumbnails.
"""

import io
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from utils.errors import DUCHError
from utils.search.api import (
    DEFAULT_HOST,
    LOCAL_HOSTS,
    MAX_K,
    MAX_SHORTLIST,
    MAX_UPLOAD_PIXELS,  # noqa: F401 (the upload limit, named here with the other limits of the server)
    UPLOAD_FORMATS,
    GuardMiddleware,
    RequestError,
    SearchParams,
    allowed_hosts,
    check_parameters,
    check_same_origin,
    decode_upload,
    parse_search_params,
    request_int,
)
from utils.search.query import TARGETS, Query, QueryEncoder, SearchIndex, search

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 16.0
MAX_UPLOAD_MB = 1024.0
DECODE_SLOTS = 2  # uploads decoded and encoded at once, in a pool of their own; the others wait their turn
MAX_WAITING_UPLOADS = 32  # beyond this many uploads waiting, a new one is answered 503 (try again)
# content types an image upload may carry; a "simple" type (text/plain, forms) is what a page of any other origin
# can POST without the browser asking first, so those are refused
UPLOAD_CONTENT_TYPES = ("application/octet-stream", "image/")
THUMBNAIL_SIZE = 256  # longest side, pixels
REFRESH_SECONDS = 1.0  # how often a request looks whether the index's manifest was replaced (one stat)
THUMBNAIL_CACHE = 4096  # thumbnails kept in memory (about 10 KB each)
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


# ----------------------------------------------------------------------------------------------
# the service


class SearchService:
    """An index, its models and the query encoders, loaded once; answers the requests of ``create_app``."""

    def __init__(self, index_dir: str | Path, device: str = "auto", max_upload_bytes: int | None = None,
                 preload: str = "now"):
        """``preload``: "now" loads the models before returning, "background" in a thread (searches by row answer
        at once; a sentence or an image waits for its model; /api/health says which are ready), "none" on first
        use."""
        start = time.perf_counter()
        self.index_dir, self.device = Path(index_dir), device
        self._index = SearchIndex.open(index_dir)
        self._seen = self._manifest_stat()
        self._checked = time.monotonic()
        self._swap_lock = threading.Lock()
        self._thumbnails: OrderedDict[int, bytes] = OrderedDict()
        self._thumb_lock = threading.Lock()
        self.encoder = QueryEncoder(self._index, device)
        self.max_upload_bytes = int(max_upload_bytes or DEFAULT_MAX_UPLOAD_MB * 2**20)
        self.available = {"text": False, "image": False}
        self.locks = {"text": threading.Lock(), "image": threading.Lock()}
        self.models_state = "not loaded"
        self.models_ready = threading.Event()
        if preload == "now":
            self._load_models(background=False)
        elif preload == "background":
            threading.Thread(target=self._load_models, args=(True,), name="duch-models", daemon=True).start()
        self._upload_dir = Path(tempfile.mkdtemp(prefix="duch-serve-"))
        # uploads run in a pool of their own: a burst of them never takes the threads that answer rows, text
        # queries and thumbnails (FastAPI's pool)
        from concurrent.futures import ThreadPoolExecutor

        self.upload_pool = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="duch-upload")
        self.uploads_waiting = 0
        self._uploads_lock = threading.Lock()
        self.started = time.time()
        self.load_seconds = time.perf_counter() - start

    # the index, followed as search.py index --add / --remove / --compact / --overwrite replaces it ---------------
    @property
    def index(self) -> SearchIndex:
        """The index as its manifest now stands: checked at most once per REFRESH_SECONDS (one stat); a new
        manifest is opened and swapped in whole, so every request answers from one index, old or new."""
        now = time.monotonic()
        if now - self._checked >= REFRESH_SECONDS:
            self._checked = now
            stat = self._manifest_stat()
            if stat is not None and stat != self._seen:
                self._swap(stat)
        return self._index

    def _manifest_stat(self):
        from utils.search.archive import MANIFEST_NAME

        try:
            st = (self.index_dir / MANIFEST_NAME).stat()
        except OSError:
            return None  # a rebuild in progress: keep answering from the index opened
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _swap(self, stat) -> None:
        with self._swap_lock:
            if stat == self._seen:
                return
            try:
                new = SearchIndex.open(self.index_dir)
            except DUCHError as err:  # half-written or damaged: keep the index opened, say why once
                print(f"warning: {self.index_dir} changed but cannot be opened ({err}); still answering from the "
                      f"index opened before", file=sys.stderr)
                self._seen = stat
                return
            old = self._index
            same_models = all(new.manifest.get(key) == old.manifest.get(key)
                              for key in ("checkpoint", "encoders", "features"))
            if same_models:
                self.encoder.index = new
            else:  # another run or encoder: its models are loaded afresh, in the background
                self.encoder = QueryEncoder(new, self.device)
                self.available = {"text": False, "image": False}
                self.models_ready = threading.Event()
                threading.Thread(target=self._load_models, args=(True,), name="duch-models", daemon=True).start()
            with self._thumb_lock:
                self._thumbnails.clear()
            self._index, self._seen = new, stat
            print(f"reloaded {self.index_dir}: {new.size('images')} images and {new.size('captions')} captions",
                  file=sys.stderr)

    def _load_models(self, background: bool) -> None:
        """The run's networks and the query encoders, each under its lock (a query of that kind waits for it)."""
        self.models_state = "loading"
        try:
            if any(seg.type == "mih" for segs in self.index.segments.values() for seg in segs):
                from utils.search.mih import compile_kernels

                compile_kernels()  # numba's cached kernels loaded now, not by the first request (about a second)
            with self.locks["text"], self.locks["image"]:
                if self.index.manifest.get("checkpoint"):
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                self.available = self.encoder.preload()
                if self.available["text"]:
                    self.encoder.encode_texts(["warm up"])  # the tokenizer's and the network's first-call costs
            self.models_state = "ready"
        except Exception as err:  # noqa: BLE001 (a background load reports its failure in /api/health)
            self.models_state = f"failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            if not background:
                raise
            print(f"error: the query models could not be loaded: {self.models_state}", file=sys.stderr)
        finally:
            self.models_ready.set()

    def close(self) -> None:
        self.upload_pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._upload_dir, ignore_errors=True)

    async def search_image_queued(self, p: SearchParams, data: bytes) -> dict:
        """``search_image`` in the upload pool, refused with 503 when too many uploads already wait."""
        import asyncio

        with self._uploads_lock:
            if self.uploads_waiting >= MAX_WAITING_UPLOADS:
                raise RequestError(f"{self.uploads_waiting} image uploads are waiting; try again shortly", 503)
            self.uploads_waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.upload_pool, self.search_image, p, data)
        finally:
            with self._uploads_lock:
                self.uploads_waiting -= 1

    # description -------------------------------------------------------------------------------
    def health(self) -> dict:
        return {"status": "ok", "images": self.index.size("images"), "captions": self.index.size("captions"),
                "uptime_s": round(time.time() - self.started, 1),
                "models": {"state": self.models_state, "text": self.available["text"],
                           "image": self.available["image"]}}

    def can_encode(self, kind: str) -> bool:
        """Whether queries of this kind ("text", "image") can be encoded: the model is loaded, or the index records
        it and it is still loading (such a query waits for it)."""
        if self.available[kind]:
            return True
        manifest = self.index.manifest
        return (self.models_state in ("loading", "not loaded") and bool(manifest.get("checkpoint"))
                and bool((manifest.get("encoders") or {}).get(kind)))

    def describe(self) -> dict:
        m = self.index.manifest
        labels = self.index.labels("images")
        encoders = m.get("encoders") or {}
        checkpoint = m.get("checkpoint") or {}
        text, image = encoders.get("text") or {}, encoders.get("image") or {}
        return {
            "bit": self.index.bits,
            "counts": {"images": self.index.size("images"), "captions": self.index.size("captions")},
            "classes": [{"name": c, "images": n} for c, n in labels["class"].items()],
            "splits": [{"name": s, "images": n} for s, n in labels["split"].items()],
            "removed": {t: self.index.removed_count(t) for t in TARGETS},
            "targets": list(TARGETS),
            "index": m.get("index"),
            "encoders": {"text": {"available": self.can_encode("text"), "model": text.get("model")},
                         "image": {"available": self.can_encode("image"), "weights": image.get("weights"),
                                   "img_aug": image.get("img_aug")},
                         "state": self.models_state},
            "checkpoint": {"which": checkpoint["which"], "epoch": checkpoint["epoch"], "sha256": checkpoint["sha256"],
                           "file": Path(checkpoint["path"]).name} if checkpoint else None,
            "run": Path(m["run"]["dir"]).name if m.get("run") else None,
            "codes": (m.get("source") or {}).get("codes"),
            "dataset": (m.get("dataset") or {}).get("key"),
            "limits": {"max_k": MAX_K, "max_shortlist": MAX_SHORTLIST, "max_upload_bytes": self.max_upload_bytes,
                       "thumbnail_size": THUMBNAIL_SIZE},
        }

    # searches ----------------------------------------------------------------------------------
    def search(self, p: SearchParams, query: Query | None = None) -> dict:
        """One search; ``query`` is given for an uploaded image, else built from ``p``."""
        if query is None:
            query = Query("text", text=p.text) if p.text is not None else Query("row", row=p.row, modality=p.modality)
        if query.kind == "text" and not self.available["text"]:
            self.encoder.text_spec()  # the clear error of an index without a text-model record
        if query.kind == "image" and not self.available["image"]:
            self.encoder.image_spec()
        index = self.index

        def run() -> dict:
            return search(index, self.encoder, [query], target=p.target, k=p.k, rerank=p.rerank,
                          shortlist=p.shortlist, nprobe=p.nprobe, classes=p.classes, splits=p.splits)[0]

        lock = self.locks.get(query.kind)
        if lock is None:  # rows: no model, no lock
            return run()
        with lock:
            return run()

    def search_image(self, p: SearchParams, data: bytes) -> dict:
        """An uploaded image (the request body): checked to decode, encoded from a private temporary file."""
        if not self.available["image"]:
            self.encoder.image_spec()
        fmt, size = decode_upload(data)
        fd, name = tempfile.mkstemp(suffix=UPLOAD_FORMATS[fmt], dir=self._upload_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                result = self.search(p, Query("image", path=name))
            except DUCHError as err:
                raise RequestError(str(err).replace(name, "the uploaded image")) from None
        finally:
            Path(name).unlink(missing_ok=True)
        result["query"].pop("path", None)  # a private temporary file: the upload is described instead
        result["query"]["upload"] = {"format": fmt, "width": size[0], "height": size[1], "bytes": len(data)}
        return result

    # thumbnails --------------------------------------------------------------------------------
    def thumbnail(self, row: int) -> bytes:
        """JPEG thumbnail of image row ``row`` (the file the index's metadata names for it)."""
        index = self.index
        n = index.size("images")
        if not 0 <= row < n:
            raise RequestError(f"no image row {row}: the index holds image rows 0..{n - 1}", 404)
        with self._thumb_lock:
            if row in self._thumbnails:
                self._thumbnails.move_to_end(row)
                return self._thumbnails[row]
        try:
            path = index.metadata["images"][row].get("path")
        except DUCHError:
            raise RequestError(f"the image file of row {row} cannot be read", 404) from None
        if not path or not Path(path).is_file():
            raise RequestError(f"image row {row} has no image file on this machine (rebuild the index with "
                               f"--dataset-image-dir to show it)", 404)
        from utils.data.images import load_image

        try:
            image = load_image(path, roots=index.image_folders())  # checked at every read, not only at start
        except DUCHError:
            raise RequestError(f"the image file of row {row} cannot be read", 404) from None
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._thumb_lock:
            self._thumbnails[row] = data
            while len(self._thumbnails) > THUMBNAIL_CACHE:
                self._thumbnails.popitem(last=False)
        return data


# ----------------------------------------------------------------------------------------------
# the app


def create_app(service: SearchService, host: str = DEFAULT_HOST):
    """The FastAPI app of a loaded ``SearchService``: the page, the API and the JSON errors."""
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


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DUCHError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port, "
                            f"or stop the program that uses it") from None


def serve(index_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "auto",
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, access_log: bool = False) -> None:
    """Load the index and its models, then answer until Ctrl-C."""
    import uvicorn

    if not 0 < port < 65536:
        raise DUCHError(f"--port must be 1..65535, got {port}")
    import math

    if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= MAX_UPLOAD_MB):
        raise DUCHError(f"--max-upload-mb must be a number above 0 and at most {MAX_UPLOAD_MB:g}, got {max_upload_mb}")
    check_port_free(host, port)
    service = SearchService(index_dir, device, max_upload_bytes=int(max_upload_mb * 2**20), preload="background")
    try:
        counts = service.describe()["counts"]
        print(f"loaded {counts['images']} images and {counts['captions']} captions ({service.index.bits}-bit codes, "
              f"device {device}) in {service.load_seconds:.1f} s; the query models load in the background "
              f"(/api/health says when they are ready)")
        if allowed_hosts(host) is None or host not in LOCAL_HOSTS:
            print(f"warning: listening on {host}: anyone who can reach this machine on port {port} can search this "
                  f"archive and see its images (there is no login)", file=sys.stderr)
        shown = f"[{host}]" if ":" in host else host
        print(f"serving http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
        config = uvicorn.Config(create_app(service, host), host=host, port=port, log_level="warning",
                                access_log=access_log, timeout_graceful_shutdown=5)
        try:
            uvicorn.Server(config).run()
        except KeyboardInterrupt:  # uvicorn has shut down cleanly, then passes Ctrl-C on
            pass
    finally:
        service.close()
    print("stopped")
