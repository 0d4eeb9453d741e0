"""``search.py serve``: an index kept in memory with its models, answering searches over HTTP, and a page at ``/``.

``SearchService`` holds the index, the run's networks and the query encoders, loaded once; it parses and
checks the parameters of a request and answers with the same JSON as ``search.py query --json``. ``create_app``
(``utils/search/app.py``) puts it behind a FastAPI app (served by uvicorn, ``serve``):

    GET  /                       the search page (utils/search/static/: plain HTML, CSS and JavaScript)
    GET  /api/health             {"status": "ok", ...}
    GET  /api/index              bits, counts, classes, splits, encoders, checkpoint, limits
    GET  /api/search?text=...    a sentence (or ?row=N&modality=image|caption: "more like this")
    POST /api/search?k=...       an image: the request body is the image file itself
    GET  /api/thumbnail/{row}    a JPEG thumbnail of an image row of the index (by row number only)

Common search parameters: target (images|captions), k, rerank, shortlist, nprobe, class and split (repeatable:
only results of those classes / splits, applied before the top k is cut). A bad request gets a 4xx JSON
``{"error": "one line"}``; an unexpected failure a 500 of the same form, and the server goes on answering.
The parameters and the guards of a request are in ``utils/search/api.py``. The index is followed as it is
replaced (``utils.search.archive.LiveIndex``); the models load in the background (``preload``).

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

from configs.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER
from utils.errors import DUCHError
from utils.search.api import (
    DEFAULT_HOST,
    LOCAL_HOSTS,
    MAX_K,
    MAX_SHORTLIST,
    MAX_UPLOAD_PIXELS,  # noqa: F401 (the upload limit, named here with the other limits of the server)
    UPLOAD_FORMATS,
    RequestError,
    SearchParams,
    allowed_hosts,
    decode_upload,
)
from utils.search.app import create_app  # noqa: F401 (the app of a service, named here for its callers)
from utils.search.archive import LiveIndex
from utils.search.query import TARGETS, Query, QueryEncoder, SearchIndex, search

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 16.0
MAX_UPLOAD_MB = 1024.0
DECODE_SLOTS = 2  # uploads decoded and encoded at once, in a pool of their own; the others wait their turn
MAX_WAITING_UPLOADS = 32  # beyond this many uploads waiting, a new one is answered 503 (try again)
THUMBNAIL_SIZE = 256  # longest side, pixels
THUMBNAIL_CACHE = 4096  # thumbnails kept in memory (about 10 KB each)


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
        self.device = device
        self._thumbnails: OrderedDict[int, bytes] = OrderedDict()
        self._thumb_lock = threading.Lock()
        self.live = LiveIndex(Path(index_dir), self._adopt)
        self.encoder = QueryEncoder(self.live.current(), device)
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

    @property
    def index(self) -> SearchIndex:
        """The index as its manifest now stands (``LiveIndex``): every request answers from one index."""
        return self.live.current()

    def _adopt(self, new: SearchIndex, old: SearchIndex) -> None:
        """A replaced index swapped in: the models stay when the run is the same, else load again."""
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
        print(f"reloaded {new.dir}: {new.size('images')} images and {new.size('captions')} captions", file=sys.stderr)

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
            "encoders": {"text": {"available": self.can_encode("text"), "model": text.get("model"),
                                  "encoder": text.get("encoder", DEFAULT_TEXT_ENCODER) if text else None},
                         "image": {"available": self.can_encode("image"), "weights": image.get("weights"),
                                   "img_aug": image.get("img_aug"),
                                   "encoder": image.get("encoder", DEFAULT_IMAGE_ENCODER) if image else None},
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
