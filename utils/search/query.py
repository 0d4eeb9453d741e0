"""``search.py query``: rank an index folder's codes by Hamming distance to a sentence, an image or a stored row.

Ranking is exact with ``IndexBinaryFlat`` (the default index): faiss keeps the k smallest distances
and, among equal distances, the smaller row (checked against a brute-force ranking in the tests and
re-asserted here for every result list). ``--rerank`` re-orders a Hamming shortlist by the cosine of
the continuous (pre-sign) network outputs stored in the index.
"""
from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import DUCHError, did_you_mean
from utils.fingerprints import difference
from utils.io import read_json, read_npy
from utils.runtime import resolve_device
from utils.search.encoders import (
    FeatureStats,
    ImageEncoderSpec,
    TextEncoderSpec,
    hash_outputs,
    pack_outputs,
    sha256_of,
)
from utils.search.index import FORMAT, MANIFEST_NAME, MAX_NPROBE, MODALITIES, TrainedRun, index_file_names

TARGETS = MODALITIES  # what a query searches: images or captions
ROW_MODALITIES = {"image": "images", "caption": "captions"}
DEFAULT_SHORTLIST = 1000
FILTER_CACHE = 8  # flat indexes of the rows of recent class/split filters, kept per index


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


class SearchIndex:
    """An index folder read back: manifest, packed codes, faiss indexes, metadata (outputs on demand)."""

    def __init__(self, index_dir: Path, manifest: dict):
        self.dir = index_dir
        self.manifest = manifest
        bits = manifest["bit"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 1 << 16:
            raise ValueError(f"'bit' is {bits!r}, not a code length")
        self.bits = bits
        self.codes, self.faiss, self.metadata = {}, {}, {}
        self._outputs: dict = {}
        self._labels: dict = {}  # per modality and field (class, split): the names and every row's name as a number
        self._filters: OrderedDict = OrderedDict()  # (modality, classes, splits) -> (rows matching, their flat index)
        self._lock = threading.Lock()
        self._filter_lock = threading.Lock()
        for modality in MODALITIES:
            names = index_file_names(modality)
            self.codes[modality] = read_npy(self._file(names["codes"]), "index codes")
            self.faiss[modality] = _read_faiss(self._file(names["faiss"]))
            self.metadata[modality] = _read_jsonl(self._file(names["metadata"]))
            codes = self.codes[modality]
            if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != (self.bits + 7) // 8:
                raise DUCHError(f"{index_dir}: {names['codes']} holds {codes.dtype} of shape {codes.shape}, not packed "
                                f"{self.bits}-bit codes; rebuild the index with --overwrite")
            n = len(codes)
            if self.faiss[modality].ntotal != n or len(self.metadata[modality]) != n:
                raise DUCHError(f"{index_dir}: the {modality} codes, faiss index and metadata disagree in length; "
                                f"rebuild the index with --overwrite")
            self._check_paths(modality)
            nprobe = (manifest.get("index", {}).get(modality) or {}).get("nprobe")
            if nprobe and hasattr(self.faiss[modality], "nprobe"):
                self.faiss[modality].nprobe = int(nprobe)

    def image_folders(self) -> list[str]:
        """The folders whose images the index may show: the dataset's image folder and --image-dir."""
        folders = [(self.manifest.get("dataset") or {}).get("image_dir")]
        folders.append((self.manifest.get("image_dir") or {}).get("path"))
        return [str(f) for f in folders if isinstance(f, str) and f]

    def _check_paths(self, modality: str) -> None:
        """Every image path in the metadata lies inside the index's image folders: a hand-edited or damaged
        metadata line cannot make a results page embed another file."""
        from utils.paths import is_inside

        folders = self.image_folders()
        for meta in self.metadata[modality]:
            path = meta.get("path") if isinstance(meta, dict) else None
            if path is not None and not (isinstance(path, str) and any(is_inside(path, f) for f in folders)):
                row = meta.get("row") if isinstance(meta, dict) else None
                raise DUCHError(f"{self.dir}: metadata_{modality}.jsonl row {row} names the image {path!r}, "
                                f"outside the index's image folders; refused (rebuild the index with --overwrite)")

    @classmethod
    def open(cls, index_dir: str | Path, verify_checkpoint: bool = True) -> "SearchIndex":
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise DUCHError(f"index folder not found: {index_dir}; build it with: python search.py index --run RUN_DIR "
                            f"(default output RUN_DIR/index)")
        manifest_path = index_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise DUCHError(f"{index_dir} holds no finished index ({MANIFEST_NAME} missing); build it with: "
                            f"python search.py index --run RUN_DIR --out {index_dir}")
        manifest = read_json(manifest_path, "index manifest")
        if manifest.get("format") != FORMAT:
            raise DUCHError(f"{manifest_path} is not a manifest of search.py index")
        try:
            check_digests(manifest, index_dir)
            if verify_checkpoint:
                check_checkpoint(manifest, index_dir)
            return cls(index_dir, manifest)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as err:  # a hand-edited or damaged one
            raise DUCHError(f"{manifest_path} is damaged ({type(err).__name__}: {err}); rebuild the index with "
                            f"--overwrite") from None

    def _file(self, name: str) -> Path:
        path = self.dir / name
        if not path.is_file():
            raise DUCHError(f"{path} is missing; rebuild the index with: python search.py index --run "
                            f"{self.manifest['run']['dir']} --out {self.dir} --overwrite")
        return path

    def outputs(self, modality: str) -> np.ndarray:
        """Continuous outputs (float16 on disk) of one modality, for re-ranking."""
        if modality not in self._outputs:
            path = self._file(index_file_names(modality)["outputs"])
            self._outputs[modality] = read_npy(path, "index outputs", mmap=True)
        return self._outputs[modality]

    def __len__(self) -> int:
        return len(self.codes["images"])

    def size(self, modality: str) -> int:
        return len(self.codes[modality])

    def set_nprobe(self, nprobe: int | None) -> None:
        if nprobe is None:
            return
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or not 1 <= nprobe <= MAX_NPROBE:
            raise DUCHError(f"--nprobe must be 1..{MAX_NPROBE} (inverted lists visited per query), got {nprobe}")
        for index in self.faiss.values():
            if hasattr(index, "nprobe"):
                index.nprobe = int(nprobe)

    def hamming_topk(self, target: str, query_codes: np.ndarray, k: int, nprobe: int | None = None,
                     classes: Sequence[str] | None = None,
                     splits: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows), each (n_queries, min(k, rows searched)), ordered by (distance, row).

        ``nprobe``: lists an IVF index visits for these queries only (the index keeps its own). ``classes`` /
        ``splits``: only rows of one of these classes and one of these splits are ranked, before the top k is cut,
        by an exact search over the matching rows (also beside an IVF index), so k results come back when k rows
        match."""
        query_codes = np.ascontiguousarray(query_codes, dtype=np.uint8)
        index, params, matching = self.faiss[target], None, None
        if classes is not None or splits is not None:
            matching, index = self.row_filter(target, classes, splits)
        elif nprobe is not None and hasattr(index, "nprobe"):
            import faiss

            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        k = min(int(k), index.ntotal)
        if not len(query_codes) or k == 0:
            return np.zeros((len(query_codes), 0), np.int32), np.zeros((len(query_codes), 0), np.int64)
        with faiss_threads(1 if len(query_codes) < FEW_QUERIES else None):
            distances, rows = index.search(query_codes, k, params=params)
        if matching is not None:  # rows of the filtered index -> rows of the index (in the same order)
            rows = np.where(rows >= 0, matching[np.maximum(rows, 0)], -1)
        return order_by_distance_then_row(distances, rows)

    def labels(self, target: str) -> dict[str, tuple[list[str], np.ndarray]]:
        """Per field ("class", "split"): (the names, sorted; the index of every row's name in them, or -1 where a
        row has none), computed once per modality."""
        with self._lock:
            if target not in self._labels:
                meta = self.metadata[target]
                self._labels[target] = {}
                for field in ("class", "split"):
                    names = sorted({str(m[field]) for m in meta if m.get(field)})
                    position = {name: i for i, name in enumerate(names)}
                    codes = np.fromiter((position.get(str(m.get(field) or ""), -1) for m in meta), np.int32, len(meta))
                    self._labels[target][field] = (names, codes)
            return self._labels[target]

    def row_filter(self, target: str, classes: Sequence[str] | None, splits: Sequence[str] | None):
        """(rows of ``target`` whose class is one of ``classes`` and split one of ``splits``, ascending; an exact
        IndexBinaryFlat of their codes). None: no condition on that field. An unknown class or split name is an
        error naming the known ones. The last few filters are kept (a copy of the matching codes each); a filter
        is built once, however many requests ask for it at the same time."""
        from utils.search.index import make_binary_index

        labels = self.labels(target)
        key = (target, None if classes is None else tuple(sorted(set(classes))),
               None if splits is None else tuple(sorted(set(splits))))
        for field, wanted in (("class", key[1]), ("split", key[2])):
            known = labels[field][0]
            for name in wanted or ():
                if name not in known:
                    plural = {"class": "classes", "split": "splits"}[field]
                    raise DUCHError(f"unknown {field} {name!r}{did_you_mean(name, known)}; the index's {target} have "
                                    f"{plural}: {', '.join(known) if known else 'none'}")
        with self._filter_lock:
            if key in self._filters:
                self._filters.move_to_end(key)
                return self._filters[key]
            mask = np.ones(self.size(target), bool)
            for field, wanted in (("class", key[1]), ("split", key[2])):
                if wanted is not None:
                    names, codes = labels[field]
                    mask &= np.isin(codes, [names.index(name) for name in wanted])
            matching = np.flatnonzero(mask)
            entry = (matching, make_binary_index(self.codes[target][matching], "flat")[0])
            self._filters[key] = entry
            while len(self._filters) > FILTER_CACHE:
                self._filters.popitem(last=False)
            return entry


FEW_QUERIES = 8  # below this, one thread: as fast alone, and no OpenMP spin-waits on a busy machine


@contextlib.contextmanager
def faiss_threads(n: int | None):
    """faiss's OpenMP threads set to ``n`` inside the block (None: unchanged).

    Measured on 2 cores (benchmarks/bench_search.py): one query over 1M codes takes the same time on one
    thread as on two, while two threads on a machine busy with other work spin-wait for each other (100x slower)."""
    import faiss  # lazy: a heavy import, paid only where it is used (start-up time)

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def order_by_distance_then_row(distances: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each result list sorted by (distance, row); rows faiss could not fill (-1, approximate indexes) dropped to
    the end."""
    distances, rows = np.asarray(distances), np.asarray(rows)
    key_rows = np.where(rows < 0, np.iinfo(np.int64).max, rows)
    order = np.lexsort((key_rows, distances), axis=-1) if distances.size else np.zeros_like(rows)
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(rows, order, axis=1)


def checkpoint_file(manifest: dict, index_dir: Path) -> Path:
    """The checkpoint an index was built from: its recorded path, else the same place relative to the index
    (an index folder moved together with its run)."""
    record = manifest["checkpoint"]
    path = Path(record["path"])
    if not path.is_file() and record.get("relative_to_index"):
        moved = index_dir / record["relative_to_index"]
        if moved.is_file():
            return moved
    return path


def check_digests(manifest: dict, index_dir: Path) -> None:
    """Every file of the index is the one its manifest (written last) vouches for: no file of another build."""
    from utils.paths import contained

    digests = manifest.get("digests")
    if not isinstance(digests, dict) or not digests:
        raise DUCHError(f"{index_dir / MANIFEST_NAME} vouches for no file ('digests' missing or not a JSON object: an "
                        f"index of an earlier version, or an edited manifest), so its files cannot be checked to be "
                        f"of one build; rebuild the index with --overwrite")
    for name, record in digests.items():
        path = contained(index_dir, name, "index file")
        if not isinstance(record, dict) or difference(record, path) is not None:
            why = "missing" if not path.is_file() else "not the file the manifest was written with"
            raise DUCHError(f"{path} is {why} (an interrupted or concurrent rebuild, or a damaged copy); rebuild the "
                            f"index with: python search.py index --run {manifest.get('run', {}).get('dir')} "
                            f"--out {index_dir} --overwrite")


def check_checkpoint(manifest: dict, index_dir: Path) -> None:
    """The index must come from the checkpoint the run holds now: its sha256 is compared."""
    record = manifest["checkpoint"]
    path = checkpoint_file(manifest, index_dir)
    if not path.is_file():
        raise DUCHError(f"the checkpoint this index was built from, {path}, no longer exists (run folder moved or "
                        f"deleted); rebuild the index from the run: python search.py index --run RUN_DIR --overwrite")
    now = sha256_of(path)
    if now != record["sha256"]:
        raise DUCHError(f"{path} has changed since this index was built (sha256 {record['sha256'][:12]}... then, "
                        f"{now[:12]}... now: the run was retrained or resumed); rebuild it: python search.py index "
                        f"--run {manifest['run']['dir']} --checkpoint {record['which']} --overwrite")


def _read_faiss(path: Path):
    import faiss  # lazy: a heavy import, paid only where it is used (start-up time)

    try:
        return faiss.read_index_binary(str(path))
    except RuntimeError as err:
        raise DUCHError(f"cannot read faiss index {path}: {str(err).splitlines()[0]}") from None


def _read_jsonl(path: Path) -> list[dict]:
    """Metadata lines, each a JSON object; a broken line is a DUCHError naming its number."""
    rows, number = [], 1
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
                rows.append(row)
    except (ValueError, UnicodeDecodeError) as err:
        raise DUCHError(f"{path} line {number} is damaged ({str(err).splitlines()[0]}); "
                        f"rebuild the index with --overwrite") from None
    return rows


class QueryEncoder:
    """The run's networks and the feature encoders, loaded once per process and on first use."""

    def __init__(self, index: SearchIndex, device="auto", batch_size: int = 64):
        self.index = index
        self.device = resolve_device(device)
        self.batch_size = batch_size
        features = index.manifest["features"]
        self.image_stats = FeatureStats(**features["image"]["standardisation"])
        self.caption_stats = FeatureStats(**features["caption"]["standardisation"])
        self._model = self._text_model = self._image_model = None

    @property
    def model(self):
        if self._model is None:
            manifest = self.index.manifest
            path = checkpoint_file(manifest, self.index.dir)
            run = TrainedRun(path.parent, manifest["run"]["config"], path, manifest["checkpoint"]["which"])
            self._model = run.load_model(self.device)
        return self._model

    def preload(self) -> dict:
        """Load now the run's networks and every encoder the index records (a server loads them once, before it
        answers); returns which query kinds can be encoded: ``{"text": bool, "image": bool}``."""
        self.model
        encoders = self.index.manifest["encoders"]
        if encoders.get("text") and self._text_model is None:
            self._text_model = self.text_spec().load(self.device)
        if encoders.get("image") and self._image_model is None:
            self._image_model = self.image_spec().build(self.device)
        return {"text": self._text_model is not None, "image": self._image_model is not None}

    # text --------------------------------------------------------------------------------------
    def text_spec(self) -> TextEncoderSpec:
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
        features = self.caption_stats.apply(self.embed_texts(texts))
        return hash_outputs(self.model.text_net, features, self.device)

    # images ------------------------------------------------------------------------------------
    def image_spec(self) -> ImageEncoderSpec:
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
        features = self.image_stats.apply(self.embed_images(paths))
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
        for i in groups["row"]:
            out[i] = self.index.outputs(ROW_MODALITIES[queries[i].modality])[queries[i].row]
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
        for rank, j in enumerate(np.flatnonzero(rows[i] >= 0)[:k]):
            row = int(rows[i, j])
            item = {"rank": rank + 1, "row": row, "distance": int(distances[i, j])}
            if cosines is not None:
                item["cosine"] = round(float(cosines[i, j]), 6)
            item.update(describe(index.metadata[target][row], target))
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

