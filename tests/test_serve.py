"""search.py serve: the HTTP API against search.py query, filters, errors, uploads and safety, the Python
client, the command's start and Ctrl-C, and the page driven in a real browser (Chromium through Playwright)."""
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from tests.test_search import ROOT, brute_force, run_search

UPLOAD_LIMIT = 200_000  # bytes: the demo images are about 30 KB
CHROMIUM = os.environ.get("DUCH_CHROMIUM", "/usr/bin/chromium")


class Served:
    """A server answering on a free loopback port, in a thread of this process."""

    def __init__(self, service, app):
        import uvicorn

        self.service = service
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)

    def request(self, method: str, path: str, body=None, headers=None):
        """(status, headers, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            conn.close()

    def get(self, path: str, **params):
        query = "?" + urllib.parse.urlencode(params, doseq=True) if params else ""
        status, headers, body = self.request("GET", path + query)
        return status, json.loads(body) if headers.get("content-type", "").startswith("application/json") else body

    def stop(self):
        self.server.should_exit = True
        self.thread.join(15)
        self.service.close()


@pytest.fixture(scope="module")
def served(tiny_run):
    from utils.search.server import SearchService, create_app

    service = SearchService(tiny_run["index"], "cpu", max_upload_bytes=UPLOAD_LIMIT)
    server = Served(service, create_app(service))
    yield server
    server.stop()


def cli(tiny_run, *argv):
    """The same query through search.py query --json, as JSON."""
    return json.loads(json.dumps(run_search("query", "--index", tiny_run["index"], *argv, "--quiet")[0]))


def metadata(tiny_run, target):
    from tests.conftest import index_rows

    return index_rows(tiny_run["index"], target)


# ------------------------------------------------------------------------------------------------
# answers equal search.py query


@pytest.mark.parametrize("target,k", [("images", 7), ("captions", 60)])
def test_text_search_equals_search_query(served, tiny_run, target, k):
    status, answer = served.get("/api/search", text="There are green fields .", target=target, k=k)
    assert status == 200
    assert answer == cli(tiny_run, "--text", "There are green fields .", "--target", target, "-k", k)
    assert len(answer["results"]) == k


@pytest.mark.parametrize("modality,target,rerank", [("image", "images", False), ("caption", "images", True),
                                                    ("image", "captions", False), ("caption", "captions", True)])
def test_row_search_equals_search_query(served, tiny_run, modality, target, rerank):
    params = dict(row=3, modality=modality, target=target, k=9, **({"rerank": 1, "shortlist": 20} if rerank else {}))
    status, answer = served.get("/api/search", **params)
    assert status == 200
    expected = cli(tiny_run, "--row", 3, "--modality", modality, "--target", target, "-k", 9,
                   *(["--rerank", "--shortlist", 20] if rerank else []))
    assert answer == expected
    image_row = 3 if modality == "image" else metadata(tiny_run, "captions")[3]["image_row"]
    assert answer["query"]["query_image_row"] == image_row


def test_image_upload_equals_search_query(served, tiny_run):
    path = tiny_run["data"] / "images" / "5.png"
    status, headers, body = served.request("POST", "/api/search?k=12", path.read_bytes(),
                                           {"Content-Type": "application/octet-stream"})
    assert status == 200, body
    answer = json.loads(body)
    expected = cli(tiny_run, "--image", path, "-k", 12)
    assert answer["results"] == expected["results"] and answer["query"]["code"] == expected["query"]["code"]
    assert "path" not in answer["query"]  # the server's temporary file is not shown
    assert answer["query"]["upload"]["format"] == "PNG" and answer["query"]["upload"]["bytes"] == path.stat().st_size
    assert not list(served.service._upload_dir.iterdir())  # the temporary file is gone


def test_filters_apply_before_the_top_k_is_cut(served, tiny_run):
    index_codes = served.service.index.codes
    meta = metadata(tiny_run, "images")
    chosen = meta[5]["class"]
    matching = [m["row"] for m in meta if m["class"] == chosen]
    status, answer = served.get("/api/search", row=0, modality="image", k=5, **{"class": chosen})
    assert status == 200
    # k is larger than the class: every matching row comes back, ranked as brute force over those rows
    rows, distances = brute_force(index_codes["images"][matching], index_codes["images"][0], len(matching))
    assert [r["row"] for r in answer["results"]] == [matching[i] for i in rows]
    assert [r["distance"] for r in answer["results"]] == distances
    assert answer["query"]["filters"] == {"class": [chosen]}
    assert answer == cli(tiny_run, "--row", 0, "--modality", "image", "-k", 5, "--class", chosen)
    # classes and splits together, over captions: k of the matching rows, the nearest first
    second = meta[6]["class"] if meta[6]["class"] != chosen else meta[7]["class"]
    caps = metadata(tiny_run, "captions")
    wanted = [m["row"] for m in caps if m["class"] in (chosen, second) and m["split"] == "db"]
    assert len(wanted) > 8
    status, answer = served.get("/api/search", text="a river", target="captions", k=8, **{"class": [chosen, second]},
                                split="db")
    assert status == 200 and len(answer["results"]) == 8
    assert all(r["class"] in (chosen, second) and r["split"] == "db" for r in answer["results"])
    code = np.frombuffer(bytes.fromhex(answer["query"]["code"]), np.uint8)
    rows, distances = brute_force(index_codes["captions"][wanted], code, 8)
    assert [r["row"] for r in answer["results"]] == [wanted[i] for i in rows]
    assert answer == cli(tiny_run, "--text", "a river", "--target", "captions", "-k", 8, "--class", chosen,
                         "--class", second, "--split", "db")
    # re-ranking keeps to the filter too
    status, answer = served.get("/api/search", row=1, modality="caption", k=4, rerank=1, split="train")
    assert status == 200 and len(answer["results"]) == 4 and all(r["split"] == "train" for r in answer["results"])


def test_filters_and_nprobe_on_an_ivf_index(tiny_run, tmp_path):
    """A filter beside an IVF index is an exact search over the matching rows; nprobe applies to one search only."""
    from utils.search.query import Query, SearchIndex, search

    run_search("index", "--run", tiny_run["run"], "--out", tmp_path / "ivf", "--index-type", "ivf", "--nlist", 2,
               "--nprobe", 1, "--no-progress")
    index = SearchIndex.open(tmp_path / "ivf")
    meta = metadata(tiny_run, "captions")
    wanted = [m["row"] for m in meta if m["split"] in ("db", "query")]
    query = [Query("row", row=7, modality="image")]
    result = search(index, None, query, target="captions", k=len(wanted) + 5, splits=["query", "db"])[0]
    rows, distances = brute_force(index.codes["captions"][wanted], index.codes["images"][7], len(wanted))
    assert [r["row"] for r in result["results"]] == [wanted[i] for i in rows]
    assert [r["distance"] for r in result["results"]] == distances
    every = search(index, None, query, target="captions", k=60, nprobe=2)[0]  # both lists: the exact ranking
    rows, _ = brute_force(index.codes["captions"], index.codes["images"][7], 60)
    assert [r["row"] for r in every["results"]] == rows
    assert index.segments["captions"][0].structure.nprobe == 1  # the index keeps its own


def test_index_description_and_health(served, tiny_run):
    status, d = served.get("/api/index")
    assert status == 200
    meta = metadata(tiny_run, "images")
    manifest = json.loads((tiny_run["index"] / "manifest.json").read_text())
    assert d["bit"] == manifest["bit"] and d["counts"] == {"images": len(meta), "captions": 5 * len(meta)}
    classes = {m["class"] for m in meta}
    assert {c["name"]: c["images"] for c in d["classes"]} == {c: sum(m["class"] == c for m in meta) for c in classes}
    assert sum(s["images"] for s in d["splits"]) == len(meta)
    assert d["encoders"]["text"]["available"] and d["encoders"]["image"]["available"]
    assert d["checkpoint"]["sha256"] == manifest["checkpoint"]["sha256"] and d["index"]["type"] == "flat"
    assert d["limits"]["max_upload_bytes"] == UPLOAD_LIMIT
    status, health = served.get("/api/health")
    assert status == 200 and health["status"] == "ok" and health["images"] == len(meta)


# ------------------------------------------------------------------------------------------------
# errors: 4xx, one JSON line, and the server goes on


BAD_REQUESTS = [
    ("/api/search?text=a&k=0", 400, "k must be 1..1000"),
    ("/api/search?text=a&k=1001", 400, "k must be 1..1000"),
    ("/api/search?text=a&k=ten", 400, "k must be an integer"),
    ("/api/search?text=a&k=3&k=4", 400, "given 2 times"),
    ("/api/search?text=%20%20", 400, "empty text query"),
    ("/api/search?text=a&row=1", 400, "not both"),
    ("/api/search?k=3", 400, "not neither"),
    ("/api/search?row=-1", 400, "row must be at least 0"),
    ("/api/search?row=12&modality=image", 400, "out of range"),
    ("/api/search?row=1&modality=pixel", 400, "modality must be image or caption"),
    ("/api/search?text=a&modality=image", 400, "modality goes with row"),
    ("/api/search?text=a&target=maps", 400, "target must be images or captions"),
    ("/api/search?text=a&rerank=maybe", 400, "rerank must be 1 or 0"),
    ("/api/search?text=a&rerank=1&shortlist=0", 400, "shortlist must be"),
    ("/api/search?text=a&nprobe=0", 400, "nprobe must be 1..65536"),
    ("/api/search?text=a&class=nowhere", 400, "unknown class 'nowhere'"),
    ("/api/search?text=a&class=", 400, "empty class name"),
    ("/api/search?text=a&split=dev", 400, "unknown split 'dev'"),
    ("/api/search?image=/etc/passwd", 400, "unknown parameter 'image'"),
    ("/api/search?path=../manifest.json&text=a", 400, "unknown parameter 'path'"),
    ("/api/thumbnail/12", 404, "no image row 12"),
    ("/api/thumbnail/-1", 400, "thumbnail row must be at least 0"),
    ("/api/thumbnail/abc", 400, "thumbnail row must be an integer"),
    ("/api/thumbnail/0?path=/etc/passwd", 400, "unknown parameter 'path'"),
    ("/api/thumbnail/..%2F..%2Fmanifest.json", 404, "not found"),
    ("/api/thumbnail/../../etc/passwd", 404, "not found"),
    ("/static/..%2F..%2Fserver.py", 404, "not found"),
    ("/static/../server.py", 404, "not found"),
    ("/static/app.js.map", 404, "not found"),
    ("/manifest.json", 404, "not found"),
    ("/api/nothing", 404, "not found: /api/nothing"),
    ("/api/health?verbose=1", 400, "unknown parameter 'verbose'"),
]


@pytest.mark.parametrize("path,status,message", BAD_REQUESTS, ids=[p for p, _, _ in BAD_REQUESTS])
def test_bad_requests_get_one_clear_json_error(served, path, status, message):
    got, headers, body = served.request("GET", path)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert list(answer) == ["error"] and message in answer["error"] and "\n" not in answer["error"], answer
    assert "Traceback" not in answer["error"]


def test_unknown_class_names_the_closest_one(served, tiny_run):
    name = metadata(tiny_run, "images")[0]["class"]
    status, answer = served.get("/api/search", text="a", **{"class": name[:-1] + name[-1].upper()})
    assert status == 400 and f"did you mean {name!r}" in answer["error"]


def test_uploads_are_limited_and_must_decode(served, tiny_run):
    from PIL import Image

    octet = {"Content-Type": "application/octet-stream"}
    too_big = b"\x89PNG" + bytes(UPLOAD_LIMIT)
    status, _, body = served.request("POST", "/api/search", too_big, octet)
    assert status == 413 and "limit" in json.loads(body)["error"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(50):
            yield bytes(10_000)

    status, _, body = served.request("POST", "/api/search", chunks(), octet)  # http.client sends it chunked
    assert status == 413 and "over the limit" in json.loads(body)["error"]
    status, _, body = served.request("POST", "/api/search", b"<svg onload=alert(1)>", octet)
    assert status == 400 and "not a readable image" in json.loads(body)["error"]
    status, _, body = served.request("POST", "/api/search", b"", octet)
    assert status == 400 and "empty upload" in json.loads(body)["error"]
    truncated = (tiny_run["data"] / "images" / "2.png").read_bytes()[:3000]
    status, _, body = served.request("POST", "/api/search", truncated, octet)
    assert status == 400 and "not a readable image" in json.loads(body)["error"]
    huge = io.BytesIO()  # a small file that decodes to far more pixels than allowed
    Image.new("1", (20000, 20000)).save(huge, format="PNG")
    assert len(huge.getvalue()) < UPLOAD_LIMIT
    status, _, body = served.request("POST", "/api/search", huge.getvalue(), octet)
    assert status == 413 and "too many pixels" in json.loads(body)["error"]
    form = b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nabc\r\n--x--\r\n"
    status, _, body = served.request("POST", "/api/search", form, {"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 415 and "--data-binary" in json.loads(body)["error"]
    status, _, body = served.request("POST", "/api/search?text=a", b"x", octet)
    assert status == 400 and "search by text or row with GET" in json.loads(body)["error"]
    assert not list(served.service._upload_dir.iterdir())
    assert served.get("/api/health")[0] == 200


def test_uploads_need_a_non_simple_type_and_this_origin(served, tiny_run):
    """A page of another origin can POST text/plain or a form without the browser asking the server first:
    those types are refused, and so is a request whose Origin is not this server."""
    image = (tiny_run["data"] / "images" / "2.png").read_bytes()
    for kind in ("text/plain", "", "application/x-www-form-urlencoded"):
        status, _, body = served.request("POST", "/api/search", image, {"Content-Type": kind} if kind else {})
        assert status == 415 and "application/octet-stream or image/" in json.loads(body)["error"]
    octet = {"Content-Type": "application/octet-stream"}
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        status, _, body = served.request("POST", "/api/search", image, {**octet, "Origin": origin})
        assert status == 403 and "is refused" in json.loads(body)["error"]
    status, _, _ = served.request("POST", "/api/search", image, {**octet, "Origin": served.url})
    assert status == 200
    assert served.request("POST", "/api/search", image, {"Content-Type": "image/png"})[0] == 200


def test_a_header_too_large_is_refused_before_decoding(served):
    """A 250 KB PNG that declares 9400 x 9500 pixels is refused from its header, in well under its decode time."""
    import io

    from PIL import Image

    from utils.search.server import MAX_UPLOAD_PIXELS

    buffer = io.BytesIO()
    Image.new("1", (9400, 9500)).save(buffer, format="PNG")
    assert 9400 * 9500 > MAX_UPLOAD_PIXELS and len(buffer.getvalue()) < UPLOAD_LIMIT
    start = time.perf_counter()
    status, _, body = served.request("POST", "/api/search", buffer.getvalue(), {"Content-Type": "image/png"})
    assert status == 413 and "too many pixels" in json.loads(body)["error"]
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("nprobe", [str(2 ** 63), str(10 ** 20), "0", str(2 ** 16 + 1)])
def test_nprobe_out_of_range_is_a_clear_400(served, nprobe):
    status, body = served.get("/api/search", text="a river", nprobe=nprobe)
    assert status == 400 and "nprobe must be 1..65536" in body["error"]


def rss_bytes() -> int:
    """This process's resident memory (Linux), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_a_burst_of_uploads_does_not_starve_row_queries(served, tiny_run):
    """Uploads run in a pool of their own: with 48 large uploads in flight (each decoded and encoded; more than
    FastAPI's 40 worker threads), a row query answers within a bound, the server's memory grows within a bound
    (two decodes at a time), and the server is still whole afterwards."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000), (30, 90, 160)).save(buffer, format="PNG")  # about 12 MB decoded, a small file
    data = buffer.getvalue()
    assert len(data) < UPLOAD_LIMIT
    assert served.get("/api/search", row=1, modality="image")[0] == 200  # warm
    alone = time.perf_counter()
    assert served.get("/api/search", row=1, modality="image")[0] == 200
    alone = time.perf_counter() - alone
    peak = [rss_bytes()]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    before = rss_bytes()
    sampler.start()
    with ThreadPoolExecutor(48) as pool:
        uploads = [pool.submit(served.request, "POST", "/api/search", data, {"Content-Type": "image/png"})
                   for _ in range(48)]
        time.sleep(0.3)  # the uploads are in
        waits = []
        for row in range(5):
            start = time.perf_counter()
            assert served.get("/api/search", row=row, modality="image")[0] == 200
            waits.append(time.perf_counter() - start)
        statuses = [u.result()[0] for u in uploads]
    sampling.set()
    sampler.join()
    assert set(statuses) <= {200, 503} and 200 in statuses
    # two decodes at a time: the server grew by 156 MB here; decoding every upload at once it grew by 767 MB
    assert peak[0] - before < 400 * 2**20, (before, peak[0])
    # in FastAPI's own pool (as before), the first row query waited 2.2 s behind the uploads here
    assert max(waits) < max(0.5, 20 * alone), (waits, alone)


def test_thumbnails_by_row_only(served, tiny_run):
    from PIL import Image

    meta = metadata(tiny_run, "images")
    status, headers, body = served.request("GET", "/api/thumbnail/4")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(body)) as thumb, Image.open(meta[4]["path"]) as original:
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
        assert thumb.size[0] / thumb.size[1] == pytest.approx(original.size[0] / original.size[1], rel=0.02)
    assert served.request("GET", "/api/thumbnail/4")[2] == body  # from the cache, the same bytes


def test_a_symlink_planted_after_start_is_not_served(served, tiny_run, tmp_path):
    """Containment is checked at every read: an image replaced by a link to a file outside the index's image
    folders after the server started is refused (404), not served."""
    import os
    import shutil

    from PIL import Image

    path = Path(metadata(tiny_run, "images")[7]["path"])
    saved = tmp_path / "saved.png"
    shutil.move(path, saved)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "outside.png")
    try:
        os.symlink(tmp_path / "outside.png", path)
        status, _, body = served.request("GET", "/api/thumbnail/7")
        assert status == 404 and b"cannot be read" in body
    finally:
        path.unlink(missing_ok=True)
        shutil.move(saved, path)
    assert served.request("GET", "/api/thumbnail/7")[0] == 200


def test_host_header_of_another_name_is_refused(served):
    status, _, body = served.request("GET", "/api/health", headers={"Host": "attacker.example:80"})
    assert status == 421 and "not served here" in json.loads(body)["error"]
    status, headers, _ = served.request("GET", "/", headers={"Host": f"localhost:{served.port}"})
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_a_failing_request_does_not_stop_the_server(served, monkeypatch):
    import utils.search.server as server_module

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(server_module, "search", broken)
    status, answer = served.get("/api/search", text="a river")
    assert status == 500 and answer["error"].startswith("internal error (RuntimeError)")
    monkeypatch.undo()
    status, answer = served.get("/api/search", text="a river", k=3)
    assert status == 200 and len(answer["results"]) == 3


def test_rows_use_no_model_and_text_only_the_text_encoder(served, tiny_run, monkeypatch):
    from utils.search.encoders import ImageEncoderSpec, TextEncoderSpec
    from utils.search.query import QueryEncoder

    expected = cli(tiny_run, "--text", "a river", "-k", 4)  # (a process of its own would load the models)
    encoder = served.service.encoder
    assert encoder._model is not None and encoder._text_model is not None and encoder._image_model is not None

    def forbidden(*args, **kwargs):
        raise AssertionError("a model ran")

    for cls, name in ((TextEncoderSpec, "load"), (ImageEncoderSpec, "build")):  # loaded once, at the start
        monkeypatch.setattr(cls, name, forbidden)
    monkeypatch.setattr(QueryEncoder, "encode_images", forbidden)
    monkeypatch.setattr(QueryEncoder, "encode_texts", forbidden)
    status, answer = served.get("/api/search", row=2, modality="caption", k=4)
    assert status == 200 and len(answer["results"]) == 4
    monkeypatch.undo()
    for cls, name in ((TextEncoderSpec, "load"), (ImageEncoderSpec, "build")):
        monkeypatch.setattr(cls, name, forbidden)
    monkeypatch.setattr(QueryEncoder, "encode_images", forbidden)
    status, answer = served.get("/api/search", text="a river", k=4)
    assert status == 200 and answer == expected


def test_concurrent_requests_answer_as_one_at_a_time(served, tiny_run):
    from concurrent.futures import ThreadPoolExecutor

    image = (tiny_run["data"] / "images" / "3.png").read_bytes()
    asks = [("text", f"green fields number {i % 3}") for i in range(12)] + [("row", i % 12) for i in range(12)] \
        + [("image", None)] * 4

    def ask(item):
        kind, value = item
        if kind == "image":
            status, _, body = served.request("POST", "/api/search?k=5", image, {"Content-Type": "image/png"})
            return status, json.loads(body)
        return served.get("/api/search", k=5, **({"text": value} if kind == "text" else {"row": value}))

    alone = [ask(item) for item in asks]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, asks))
    assert all(status == 200 for status, _ in alone)
    assert together == alone


def test_client(served, tiny_run):
    from utils.search.client import SearchClient, SearchError, search

    client = SearchClient(served.url)
    assert client.search(text="a river", k=3) == served.get("/api/search", text="a river", k=3)[1]
    meta = metadata(tiny_run, "images")
    result = search(served.url, row=1, modality="caption", target="captions", k=4, classes=[meta[0]["class"]])
    assert len(result["results"]) == 4 and all(r["class"] == meta[0]["class"] for r in result["results"])
    path = tiny_run["data"] / "images" / "5.png"
    assert client.search(image=path, k=3)["results"] == cli(tiny_run, "--image", path, "-k", 3)["results"]
    assert client.describe()["bit"] == served.service.index.bits and client.health()["status"] == "ok"
    assert client.thumbnail(0)[:2] == b"\xff\xd8"  # JPEG
    with pytest.raises(SearchError) as err:
        client.search(text="a", k=0)
    assert err.value.status == 400 and "k must be" in str(err.value)
    with pytest.raises(SearchError, match="cannot reach"):
        SearchClient("http://127.0.0.1:9", timeout=5).health()


# ------------------------------------------------------------------------------------------------
# the command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_and_stops_on_ctrl_c(tiny_run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "search.py", "serve", "--index", str(tiny_run["index"]),
                             "--port", str(port), "--device", "cpu"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("loaded 12 images and 60 captions"), line + proc.stderr.read()
        assert proc.stdout.readline().strip() == f"serving http://127.0.0.1:{port}/ (Ctrl-C stops)"
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/api/search?row=0&k=2")
                answer = json.loads(conn.getresponse().read())
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert [r["rank"] for r in answer["results"]] == [1, 2]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.strip().endswith("stopped") and "Traceback" not in err, err


def test_serve_command_bad_input(tiny_run, tmp_path, capsys):
    from tests.test_search import expect_error

    expect_error(capsys, "serve", "--index", tmp_path / "none", match="index folder not found")
    expect_error(capsys, "serve", "--index", tiny_run["index"], "--port", 0, match="--port must be 1..65535")
    for bad in ("nan", "inf", "-1", "1e9"):
        expect_error(capsys, "serve", "--index", tiny_run["index"], "--max-upload-mb", bad,
                     match="--max-upload-mb must be a number above 0 and at most 1024")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        expect_error(capsys, "serve", "--index", tiny_run["index"], "--port", busy.getsockname()[1],
                     match="choose another --port")


# ------------------------------------------------------------------------------------------------
# the page, in a real browser


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright for Python: pip install playwright")
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium")
    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    yield tab
    context.close()
    assert not errors, errors


def shown_rows(page) -> list[int]:
    return [int(r) for r in page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.row)")]


SHOWS_ROWS = "rows => [...document.querySelectorAll('#results .card')].map(c => +c.dataset.row).join() === rows"


# (page functions are given as functions, never as expressions: Playwright evaluates an expression with eval,
# which the page's Content-Security-Policy forbids)
def wait_for_thumbnails(page, n: int) -> None:
    """n result cards whose thumbnails have loaded (decoded, non-empty)."""
    page.wait_for_function(
        "n => { const imgs = [...document.querySelectorAll('#results .card img')];"
        " return imgs.length === n && document.querySelectorAll('#results .card').length === n"
        " && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=n, timeout=30_000)


def test_page_search_click_filter_and_reload(served, page, tiny_run):
    page.goto(served.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#classes input').length > 0")
    page.fill("#k", "5")
    page.fill("#text", "There are green fields .")
    page.press("#text", "Enter")
    wait_for_thumbnails(page, 5)
    expected = served.get("/api/search", text="There are green fields .", k=5)[1]
    assert shown_rows(page) == [r["row"] for r in expected["results"]]
    first = page.locator("#results .card").first
    assert expected["results"][0]["filename"] in first.inner_text()
    assert "5 nearest images" in page.inner_text("#status")

    clicked = expected["results"][0]["row"]
    first.click()
    page.wait_for_url(f"**row={clicked}&modality=image**")
    neighbours = served.get("/api/search", row=clicked, modality="image", k=5)[1]
    page.wait_for_function(SHOWS_ROWS, arg=",".join(str(r["row"]) for r in neighbours["results"]))
    wait_for_thumbnails(page, 5)
    assert "more like image row" in page.inner_text("#query")

    name = metadata(tiny_run, "images")[clicked]["class"]
    page.locator("#classes label.chip", has_text=name).click()
    filtered = served.get("/api/search", row=clicked, modality="image", k=5, **{"class": name})[1]
    want = [r["row"] for r in filtered["results"]]
    page.wait_for_function(SHOWS_ROWS, arg=",".join(map(str, want)))
    assert "class=" in page.url and all(name in text for text in page.locator("#results .cls").all_inner_texts())

    shared = page.url
    page.reload()
    wait_for_thumbnails(page, len(want))
    assert shown_rows(page) == want and page.url == shared
    assert page.locator("#classes label.chip.on").inner_text().startswith(name)
    page.go_back()  # the unfiltered neighbours again
    page.wait_for_function("n => document.querySelectorAll('#results .card').length === n", arg=5)


def test_page_upload_and_escaping(served, page, tiny_run):
    page.goto(served.url + "/?k=4")
    page.wait_for_function("() => document.querySelectorAll('#classes input').length > 0")
    page.set_input_files("#file", str(tiny_run["data"] / "images" / "5.png"))
    wait_for_thumbnails(page, 4)
    expected = cli(tiny_run, "--image", tiny_run["data"] / "images" / "5.png", "-k", 4)
    assert shown_rows(page) == [r["row"] for r in expected["results"]]
    hostile = '<img src=x onerror="window.pwned=1">'
    page.fill("#text", hostile)
    page.press("#text", "Enter")
    wait_for_thumbnails(page, 4)
    assert page.inner_text("#query .said") == f"“{hostile}”"
    assert page.evaluate("() => window.pwned === undefined && document.querySelectorAll('#query img').length === 0")
    page.fill("#k", "0")
    page.dispatch_event("#k", "change")  # a refused request is shown as one line, in the page
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    assert "k must be 1..1000" in page.inner_text("#status")


def test_page_of_a_codes_index_searches_by_rows(browser, tmp_path):
    """An index of a codes file (no model, no images): the page says what it holds, offers no text box, and a
    row search from the address shows its results."""
    from tests.test_search_grow import write_codes_file
    from utils.search.server import SearchService, create_app

    write_codes_file(tmp_path / "codes.npz", np.random.default_rng(3))
    run_search("index", "--codes", tmp_path / "codes.npz", "--out", tmp_path / "index", "--no-progress")
    service = SearchService(tmp_path / "index", "cpu")
    server = Served(service, create_app(service))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    try:
        tab.goto(server.url + "/?row=3&modality=image&k=6")
        expected = server.get("/api/search", row=3, modality="image", k=6)[1]
        tab.wait_for_function(SHOWS_ROWS, arg=",".join(str(r["row"]) for r in expected["results"]))
        assert "codes of" in tab.inner_text("#about") and tab.is_disabled("#text") and tab.is_disabled("#rerank")
        assert not tab.is_visible("#drop")  # no image encoder: no drop zone
        assert tab.locator("#results .card .missing").count() == 6  # no image files: a placeholder each
        assert "null" not in tab.inner_text("#results")
        tab.screenshot(path=str(tmp_path / "codes_page.png"))
    finally:
        context.close()
        server.stop()
    assert not errors, errors
