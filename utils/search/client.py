"""A small Python client of ``search.py serve`` (standard library only).

    from utils.search.client import SearchClient

    client = SearchClient("http://127.0.0.1:8000")
    result = client.search(text="a river next to green fields", k=5, classes=["river"])
    for r in result["results"]:
        print(r["rank"], r["distance"], r["filename"], r["class"])
    more = client.search(row=result["results"][0]["row"], modality="image")
    by_image = client.search(image="some/picture.png", target="captions")

The answers are the JSON of ``search.py query --json``; a refused request raises ``SearchError`` with the
server's one-line message and ``status``.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Sequence

from utils.errors import DUCHError


class SearchError(DUCHError):
    """The server refused a request (``status``: the HTTP status, 0 when the server could not be reached)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class SearchClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, params: list[tuple[str, str]] | None = None, body: bytes | None = None) -> bytes:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read().decode("utf-8"))["error"]
            except (ValueError, KeyError, TypeError):
                message = f"{err.code} {err.reason}"
            raise SearchError(message, err.code) from None
        except urllib.error.URLError as err:
            raise SearchError(f"cannot reach the search server at {self.url}: {err.reason}") from None

    def search(self, text: str | None = None, image: str | Path | bytes | None = None, row: int | None = None,
               modality: str = "image", target: str = "images", k: int = 10, rerank: bool = False,
               shortlist: int | None = None, nprobe: int | None = None, classes: Sequence[str] | None = None,
               splits: Sequence[str] | None = None) -> dict:
        """Search by a sentence, an image (a file path or its bytes) or a stored row ("more like this")."""
        if sum(x is not None for x in (text, image, row)) != 1:
            raise SearchError("give exactly one of text, image and row")
        params = [("target", target), ("k", str(k))]
        if text is not None:
            params.append(("text", text))
        if row is not None:
            params += [("row", str(row)), ("modality", modality)]
        if rerank:
            params.append(("rerank", "1"))
        params += [(name, str(value)) for name, value in (("shortlist", shortlist), ("nprobe", nprobe))
                   if value is not None]
        params += [("class", c) for c in classes or ()] + [("split", s) for s in splits or ()]
        body = None
        if image is not None:
            body = image if isinstance(image, bytes) else Path(image).read_bytes()
        return json.loads(self._call("/api/search", params, body))

    def describe(self) -> dict:
        """The index: bits, counts, classes, splits, encoders, checkpoint, limits."""
        return json.loads(self._call("/api/index"))

    def health(self) -> dict:
        return json.loads(self._call("/api/health"))

    def thumbnail(self, row: int) -> bytes:
        """JPEG bytes of the thumbnail of an image row."""
        return self._call(f"/api/thumbnail/{int(row)}")


def search(url: str, **query) -> dict:
    """One search: ``search("http://127.0.0.1:8000", text="a beach", k=5)``; see ``SearchClient.search``."""
    return SearchClient(url).search(**query)
