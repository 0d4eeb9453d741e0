"""``search.py query``: rank an index folder's codes by Hamming distance to a sentence, an image or a stored row.

The index (``utils.search.archive``) ranks exactly with flat and mih segments: the k smallest distances and,
among equal distances, the smaller row. ``--rerank`` re-orders a Hamming shortlist by the cosine of the
continuous (pre-sign) network outputs stored in the index. The models are loaded on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import DUCHError
from utils.runtime import resolve_device
from utils.search.archive import MODALITIES, SearchIndex, checkpoint_file
from utils.search.encoders import (
    FeatureStats,
    ImageEncoderSpec,
    TextEncoderSpec,
    hash_outputs,
    pack_outputs,
)
from utils.search.segments import order_by_distance_then_row  # noqa: F401 (the ranking order, named here too)

TARGETS = MODALITIES  # what a query searches: images or captions
ROW_MODALITIES = {"image": "images", "caption": "captions"}
DEFAULT_SHORTLIST = 1000


@dataclass
class Query:
    """One query: a sentence, an image file, or a stored row of the index."""

    kind: str  # "text", "image" or "row"
    text: str | None = None
    path: str | None = None
    row: int | None = None
    modality: str | None = None  # for rows: "image" or "caption"

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def parse_line(cls, line: str) -> "Query":
        """A line of a --queries file: an existing file is an image, anything else a sentence."""
        line = line.strip()
        if line and Path(line).expanduser().is_file():
            return cls("image", path=str(Path(line).expanduser()))
        return cls("text", text=line)


class QueryEncoder:
    """The run's networks and the feature encoders, loaded once per process and on first use."""

    def __init__(self, index: SearchIndex, device="auto", batch_size: int = 64):
        self.index = index
        self._device_name, self._device = device, None
        self.batch_size = batch_size
        self._model = self._text_model = self._image_model = None

    @property
    def device(self):
        """The torch device, resolved on first use: a search by stored rows never imports torch (start-up)."""
        if self._device is None:
            self._device = resolve_device(self._device_name)
        return self._device

    def feature_stats(self, which: str) -> FeatureStats:
        self.require_model()
        return FeatureStats(**self.index.manifest["features"][which]["standardisation"])

    def require_model(self) -> None:
        """An index of a codes file (``search.py index --codes``) has no networks: only stored rows are queries."""
        manifest = self.index.manifest
        if not manifest.get("checkpoint"):
            source = (manifest.get("source") or {}).get("codes")
            raise DUCHError(f"this index holds the codes of {source} and no model, so sentences and images cannot be "
                            f"encoded; search it by a stored row (--row N --modality image|caption)")

    @property
    def model(self):
        if self._model is None:
            from utils.search.index import TrainedRun

            self.require_model()
            manifest = self.index.manifest
            path = checkpoint_file(manifest, self.index.dir)
            run = TrainedRun(path.parent, manifest["run"]["config"], path, manifest["checkpoint"]["which"])
            self._model = run.load_model(self.device)
        return self._model

    def preload(self) -> dict:
        """Load now the run's networks and every encoder the index records (a server loads them once, before it
        answers); returns which query kinds can be encoded: ``{"text": bool, "image": bool}``."""
        if not self.index.manifest.get("checkpoint"):
            return {"text": False, "image": False}
        self.model
        encoders = self.index.manifest["encoders"]
        if encoders.get("text") and self._text_model is None:
            self._text_model = self.text_spec().load(self.device)
        if encoders.get("image") and self._image_model is None:
            self._image_model = self.image_spec().build(self.device)
        return {"text": self._text_model is not None, "image": self._image_model is not None}

    # text --------------------------------------------------------------------------------------
    def text_spec(self) -> TextEncoderSpec:
        self.require_model()
        record = self.index.manifest["encoders"].get("text")
        if record is None:
            path = self.index.manifest["features"]["caption"]["path"]
            raise DUCHError(f"the caption features {path} carry no text-model record, so a sentence cannot be embedded "
                            "as they were; rebuild the index naming the model that made them with --text-model: "
                            f"python search.py index --run {self.index.manifest['run']['dir']} --text-model "
                            "NAME_OR_FOLDER --overwrite")
        return TextEncoderSpec.from_json(record)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Raw sentence features, exactly as captions_embed.py computes them (before standardisation)."""
        for text in texts:
            require_text(text)
        spec = self.text_spec()
        if self._text_model is None:
            self._text_model = spec.load(self.device)
        return spec.embed(self._text_model, texts, batch_size=self.batch_size)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Continuous text-net outputs (n, bits)."""
        features = self.feature_stats("caption").apply(self.embed_texts(texts))
        return hash_outputs(self.model.text_net, features, self.device)

    # images ------------------------------------------------------------------------------------
    def image_spec(self) -> ImageEncoderSpec:
        self.require_model()
        record = self.index.manifest["encoders"].get("image")
        if record is None:
            path = self.index.manifest["features"]["image"]["path"]
            raise DUCHError(f"the image features {path} carry no record of their encoder, so an image cannot be "
                            "encoded as they were; rebuild the index naming it with --weights (imagenet, none or a "
                            ".pth file) and --img-aug: python search.py index --run "
                            f"{self.index.manifest['run']['dir']} --weights imagenet --overwrite")
        return ImageEncoderSpec.from_json(record)

    def embed_images(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Raw image features, exactly as images_augment.py computes them (before standardisation)."""
        paths = [Path(p) for p in paths]
        for path in paths:
            if not path.is_file():
                raise DUCHError(f"image not found: {path}")
        spec = self.image_spec()
        spec.check_readable(paths)
        if self._image_model is None:
            self._image_model = spec.build(self.device)
        return spec.encode(self._image_model, paths, self.device, self.batch_size)

    def encode_images(self, paths: Sequence[str | Path]) -> np.ndarray:
        features = self.feature_stats("image").apply(self.embed_images(paths))
        return hash_outputs(self.model.image_net, features, self.device)

    # any query ---------------------------------------------------------------------------------
    def encode(self, queries: Sequence[Query]) -> np.ndarray:
        """Continuous outputs of every query (n, bits), texts and images each in one batch."""
        out = np.zeros((len(queries), self.index.bits), np.float32)
        groups: dict[str, list[int]] = {"text": [], "image": [], "row": []}
        for i, q in enumerate(queries):
            groups[q.kind].append(i)
        if groups["text"]:
            out[groups["text"]] = self.encode_texts([queries[i].text for i in groups["text"]])
        if groups["image"]:
            out[groups["image"]] = self.encode_images([queries[i].path for i in groups["image"]])
        for i in groups["row"]:  # codes of rows are the stored ones: outputs only matter for --rerank
            modality = ROW_MODALITIES[queries[i].modality]
            if self.index.has_outputs(modality):
                out[i] = self.index.outputs(modality)[queries[i].row]
        return out


def require_text(text: str | None) -> None:
    """A sentence that still has words after the caption cleaning (lower case, ``. , ! ?`` removed)."""
    from models.text_encoder import preprocess_caption

    try:
        str(text or "").encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
        raise DUCHError(f"text query {str(text).encode('utf-8', 'backslashreplace').decode()!r} is not valid UTF-8 "
                        f"text") from None
    if not preprocess_caption(str(text or "")).strip():
        raise DUCHError(f"empty text query {str(text or '')!r} (nothing left after removing punctuation); give a "
                        f"sentence, e.g. --text \"a river next to green fields\"")


def check_query(index: SearchIndex, query: Query) -> None:
    if query.kind == "text":
        require_text(query.text)
    if query.kind == "row":
        if query.modality not in ROW_MODALITIES:
            raise DUCHError(f"--row needs --modality image or caption, got {query.modality!r}")
        n = index.size(ROW_MODALITIES[query.modality])
        if not 0 <= query.row < n:
            raise DUCHError(f"--row {query.row} is out of range: the index holds {n} {ROW_MODALITIES[query.modality]} "
                            f"(rows 0..{n - 1})")
        if index.is_removed(ROW_MODALITIES[query.modality], query.row):
            raise DUCHError(f"{query.modality} row {query.row} was removed from the index (search.py index --remove)")


def search(index: SearchIndex, encoder: QueryEncoder | None, queries: Sequence[Query], target: str = "images",
           k: int = 10, rerank: bool = False, shortlist: int = DEFAULT_SHORTLIST, nprobe: int | None = None,
           classes: Sequence[str] | None = None, splits: Sequence[str] | None = None) -> list[dict]:
    """Results of every query: ``{"query", "results": [{"rank", "row", "distance", ...}]}``.

    ``encoder`` holds the models across calls (one is made when None). ``nprobe``: IVF lists visited by these
    queries (default: the index's). ``classes`` / ``splits``: only rows of these classes and splits are ranked,
    before the top k is cut (``SearchIndex.hamming_topk``); the query record then names them under ``filters``."""
    if target not in TARGETS:
        raise DUCHError(f"unknown --target {target!r}; choose images or captions")
    if k < 1:
        raise DUCHError(f"-k must be at least 1, got {k}")
    if rerank and shortlist < 1:
        raise DUCHError(f"--shortlist must be at least 1, got {shortlist}")
    if rerank and not index.has_outputs(target):
        raise DUCHError("--rerank needs the continuous outputs, which this index does not hold (an index of a codes "
                        "file): search without --rerank")
    if nprobe is not None and nprobe < 1:
        raise DUCHError(f"--nprobe must be at least 1, got {nprobe}")
    for q in queries:
        check_query(index, q)
    filters = {name: sorted(set(values)) for name, values in (("class", classes), ("split", splits))
               if values is not None}
    if filters:
        index.row_filter(target, classes, splits)  # unknown names are refused before a model runs
    if not queries:
        return []
    outputs = (encoder or QueryEncoder(index)).encode(queries)  # stored rows need no model
    if all(q.kind == "row" for q in queries):  # their codes are the stored ones (no torch needed)
        codes = np.zeros((len(queries), (index.bits + 7) // 8), np.uint8)
    else:
        codes = pack_outputs(outputs)
    for i, q in enumerate(queries):
        if q.kind == "row":  # the stored code, not the sign of its float16 output
            codes[i] = index.codes[ROW_MODALITIES[q.modality]][q.row]
    depth = max(k, shortlist) if rerank else k
    distances, rows = index.hamming_topk(target, codes, depth, nprobe=nprobe, classes=classes, splits=splits)
    cosines = None
    if rerank:
        distances, rows, cosines = rerank_by_cosine(index.outputs(target), outputs, distances, rows)
    out = []
    for i, q in enumerate(queries):
        results = []
        places = np.flatnonzero(rows[i] >= 0)[:k]
        metas = index.metadata[target].many([int(rows[i, j]) for j in places])  # one lookup for the list
        for rank, (j, meta) in enumerate(zip(places, metas)):
            row = int(rows[i, j])
            item = {"rank": rank + 1, "row": row, "distance": int(distances[i, j])}
            if cosines is not None:
                item["cosine"] = round(float(cosines[i, j]), 6)
            item.update(describe(meta, target))
            results.append(item)
        record = q.to_json()
        if q.kind == "row":  # what the stored row is, for the table and the page
            seen = describe(index.metadata[ROW_MODALITIES[q.modality]][q.row], ROW_MODALITIES[q.modality])
            record.update(query_filename=seen["filename"], query_path=seen["path"], query_caption=seen["caption"],
                          query_image_row=seen.get("image_row", q.row))
        record.update(target=target, k=k, rerank=rerank, code=codes[i].tobytes().hex())
        if filters:
            record["filters"] = filters
        out.append({"query": record, "results": results})
    return out


def rerank_by_cosine(target_outputs: np.ndarray, query_outputs: np.ndarray, distances: np.ndarray, rows: np.ndarray):
    """Re-order each shortlist by descending cosine of continuous outputs, then Hamming distance, then row."""
    cos = np.full(rows.shape, -np.inf, np.float32)
    for i in range(len(rows)):
        valid = rows[i] >= 0
        t = np.asarray(target_outputs[rows[i][valid]], dtype=np.float32)
        q = np.asarray(query_outputs[i], dtype=np.float32)
        cos[i, valid] = (t @ q) / np.maximum(np.linalg.norm(t, axis=1) * np.linalg.norm(q), 1e-12)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), distances, -cos), axis=-1)
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return take(distances), take(rows), take(cos)


def describe(meta: dict, target: str) -> dict:
    """The fields of a result that a reader needs: file, class, caption, split, image path."""
    caption = meta.get("caption") if target == "captions" else (meta.get("captions") or [None])[0]
    out = {"filename": meta.get("filename"), "class": meta.get("class"), "caption": caption, "split": meta.get("split"),
           "path": meta.get("path")}
    if target == "captions":
        out["image_row"] = meta.get("image_row")
    return out


def format_table(result: dict, width: int = 60) -> str:
    """The ranked results of one query as a console table."""
    from utils.terminal import printable

    q = result["query"]
    what = {"text": lambda: f'text "{printable(q["text"])}"', "image": lambda: f"image {printable(q['path'])}",
            "row": lambda: f"{q['modality']} row {q['row']}"}[q["kind"]]()
    rerank = q.get("rerank")
    only = "".join(f", {name} {' or '.join(values)}" for name, values in (q.get("filters") or {}).items())
    lines = [f"query: {what} -> {q['target']}{only} (top {q['k']}{', re-ranked by cosine' if rerank else ''})"]
    header = (f"{'rank':>4} {'hamming':>7} " + (f"{'cosine':>7} " if rerank else "")
              + f"{'row':>6}  {'filename':<18} {'class':<14} caption")
    lines.append(header)
    for r in result["results"]:
        caption = printable(r.get("caption") or "")  # captions are data: no escape sequence reaches the terminal
        caption = caption if len(caption) <= width else caption[: width - 3] + "..."
        cosine = f"{r['cosine']:7.3f} " if rerank else ""
        filename = printable(str(r["filename"]))[:18]
        lines.append(f"{r['rank']:>4} {r['distance']:>7} {cosine}{r['row']:>6}  {filename:<18} "
                     f"{printable(str(r['class']))[:14]:<14} {caption}")
    return "\n".join(lines)

