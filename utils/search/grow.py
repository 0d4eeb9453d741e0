"""``search.py index --add`` / ``--remove``: change an index without rebuilding it.

``--add --image-dir DIR`` encodes, with the run's checkpoint and the recorded image encoder and
standardisation, only the images below DIR that the index does not hold yet (by resolved path), in
resumable shards, and appends them as a new segment. ``--add --captions FILE`` appends sentences of
images the index holds (lines ``IMAGE<TAB>SENTENCE``; IMAGE is a file name as the index records it, or a
path). ``--remove NAME_OR_ROW ...`` leaves images out of every search from then on, with their captions
(a number is an image row, anything else a file name or path); rows keep their numbers. ``--compact`` merges
each modality's segments into one (rows and their numbers unchanged), so that a search visits one structure
again after many additions.

The new segment files get names no manifest uses, the metadata rows past the manifest's counts (never
read by a reader of the old manifest), and the new manifest is written last, in one rename: readers see
the old index or the new one. The checkpoint must be the one the index was built from (its sha256).
"""
from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path

import numpy as np

from utils.errors import DUCHError
from utils.search import writer
from utils.search.archive import MODALITIES, SearchIndex
from utils.search.metadata import add_counts, name_counts, write_rows
from utils.search.segments import next_segment_number, write_segment

ADD_SHARDS_DIR = "added_features"
ADDED_SPLIT = "new"


def _new_images(index: SearchIndex, image_dir: Path) -> tuple[list[Path], int]:
    from utils.search.encoders import find_image_files

    if not image_dir.is_dir():
        raise DUCHError(f"--image-dir {image_dir}: no such folder")
    paths = find_image_files(image_dir)
    if not paths:
        raise DUCHError(f"no images (tif, tiff, png, jpg) found under {image_dir}")
    known = index.store.known_paths([str(p.resolve()) for p in paths])
    new = [p for p in paths if str(p.resolve()) not in known]
    return new, len(paths) - len(new)


def _encode_images(encoder, image_dir: Path, paths: list[Path], out: Path, opts) -> np.ndarray:
    """Continuous image-net outputs of ``paths``, their raw features cached in resumable shards."""
    from utils.search.encoders import hash_outputs
    from utils.search.index import encode_image_dir

    spec = encoder.image_spec()
    key = hashlib.sha256(str(image_dir.resolve()).encode()).hexdigest()[:12]
    _, raw = encode_image_dir(image_dir, spec, out, encoder.device, opts, paths=paths,
                              shard_dir=out / ADD_SHARDS_DIR / key)
    return hash_outputs(encoder.model.image_net, encoder.feature_stats("image").apply(raw), encoder.device)


def _read_caption_lines(path: Path) -> list[tuple[str, str]]:
    from utils.io import read_text_lines

    pairs = []
    for number, line in enumerate(read_text_lines(path, "--captions file"), 1):
        if not line.strip():
            continue
        image, tab, sentence = line.partition("\t")
        if not tab or not image.strip() or not sentence.strip():
            raise DUCHError(f"--captions {path} line {number}: expected IMAGE<TAB>SENTENCE, got {line[:80]!r}")
        pairs.append((image.strip(), sentence.strip()))
    if not pairs:
        raise DUCHError(f"--captions {path} holds no caption")
    return pairs


def _rows_of(index: SearchIndex, names: list[str], new_rows: dict[str, dict]) -> list[int]:
    """Image rows of names (file names as recorded, paths, or row numbers); unknown names are one error."""
    rows, unknown = [], []
    for name in names:
        if name.isdigit():
            row = int(name)
            if not 0 <= row < index.size("images"):
                raise DUCHError(f"--remove {name}: no such image row (the index holds image rows 0.."
                                f"{index.size('images') - 1})")
            rows.append(row)
            continue
        if name in new_rows:
            rows.append(new_rows[name]["row"])
            continue
        found = index.store.rows_of_files([name, str(Path(name).resolve())])
        if not len(found):
            unknown.append(name)
        rows += found.tolist()
    if unknown:
        raise DUCHError(f"not in the index: {', '.join(repr(u) for u in unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''} (give file names as the index records them, paths, "
                        f"or image row numbers)")
    return rows


def grow_index(opts, out: Path) -> dict:
    """Apply --add and/or --remove to the index in ``out``; returns the new manifest."""
    index = SearchIndex.open(out)
    previous = index.manifest
    manifest = copy.deepcopy(previous)
    counts = {m: index.size(m) for m in MODALITIES}
    new_segments: dict[str, tuple[np.ndarray, list[dict]]] = {}
    added = {"images": 0, "captions": 0, "skipped_images": 0}
    if opts.add:
        if opts.image_dir is None and opts.captions is None:
            raise DUCHError("--add needs --image-dir DIR (new images) and/or --captions FILE (new sentences)")
        from utils.search.query import QueryEncoder

        encoder = QueryEncoder(index, opts.device, opts.batch_size)
        encoder.require_model()
        image_rows: list[dict] = []
        outputs = {}
        if opts.image_dir is not None:
            image_dir = Path(opts.image_dir)
            paths, added["skipped_images"] = _new_images(index, image_dir)
            if paths:
                outputs["images"] = _encode_images(encoder, image_dir, paths, out, opts)
                image_rows = [{"row": counts["images"] + i, "filename": p.relative_to(image_dir).as_posix(),
                               "class": None, "class_code": None, "split": ADDED_SPLIT, "path": str(p.resolve()),
                               "captions": []} for i, p in enumerate(paths)]
                new_segments["images"] = (outputs["images"], image_rows)
            manifest.setdefault("added", []).append({"image_dir": str(image_dir.resolve()), "images": len(paths),
                                                     "first_row": counts["images"],
                                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if opts.captions is not None:
            by_name = {r["filename"]: r for r in image_rows} | {r["path"]: r for r in image_rows}
            pairs = _read_caption_lines(Path(opts.captions))
            rows = _rows_of(index, [image for image, _ in pairs], by_name)
            sentences = [s for _, s in pairs]
            texts = encoder.encode_texts(sentences)
            caption_rows = []
            for i, (row, sentence) in enumerate(zip(rows, sentences)):
                image = by_name.get(pairs[i][0]) or index.metadata["images"][row]
                caption_rows.append({"row": counts["captions"] + i, "image_row": row, "sentence": None,
                                     "filename": image["filename"], "class": image["class"],
                                     "class_code": image["class_code"], "split": ADDED_SPLIT, "path": image["path"],
                                     "caption": sentence, "split_caption": False})
            new_segments["captions"] = (texts, caption_rows)
    from utils.search.encoders import pack_outputs

    rows_written = {}
    for modality, (outputs_m, meta_rows) in new_segments.items():
        number = next_segment_number(manifest["segments"][modality])
        record = write_segment(out, modality, number, counts[modality], pack_outputs(outputs_m), outputs_m,
                               opts.index_type, opts.nlist, opts.nprobe)
        manifest["segments"][modality].append(record)
        rows_written[modality] = meta_rows
        added[modality] = len(meta_rows)
    if rows_written:  # past the old counts: no reader of the old manifest reads them
        write_rows(out / manifest["metadata"]["file"], manifest["metadata"]["build_id"], rows_written,
                   first_rows={m: counts[m] for m in rows_written}, fresh=False)
        for modality, meta_rows in rows_written.items():
            names = manifest["metadata"]["names"]
            names[modality] = add_counts(names[modality], name_counts(meta_rows))
    removed_now = {"images": 0, "captions": 0}
    generation = int(manifest.get("generation", 0)) + 1
    if opts.remove:
        image_rows_removed = np.unique(np.asarray(_rows_of(index, [str(x) for x in opts.remove], {}), np.int64))
        caption_rows_removed = index.store.caption_rows_of_images(image_rows_removed)
        for modality, rows in (("images", image_rows_removed), ("captions", caption_rows_removed)):
            before = index.removed[modality]
            old = np.flatnonzero(before) if before is not None else np.zeros(0, np.int64)
            merged = np.union1d(old, rows)
            removed_now[modality] = len(merged) - len(old)
            manifest["removed"][modality] = writer.write_removed(out, modality, merged, generation)
    manifest["generation"] = generation
    manifest["time_changed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = writer.commit(out, manifest, previous)
    print(f"added {added['images']} images ({added['skipped_images']} already indexed, skipped) and "
          f"{added['captions']} captions; removed {removed_now['images']} images and {removed_now['captions']} "
          f"captions; the index now holds {manifest['counts']['images']} image rows "
          f"({manifest['removed']['images']['rows']} removed) -> {out}")
    return manifest


def compact_index(opts, out: Path) -> dict:
    """Merge each modality's segments into one new segment (codes and outputs concatenated, the structure
    ``--index-type`` picks for the total); returns the new manifest."""
    index = SearchIndex.open(out, verify_checkpoint=False)
    previous = index.manifest
    manifest = copy.deepcopy(previous)
    merged = {}
    for modality in MODALITIES:
        segments = index.segments[modality]
        if len(segments) < 2:
            continue
        number = next_segment_number([s.record for s in segments])
        codes = np.concatenate([np.asarray(s.codes) for s in segments])
        outputs = (np.concatenate([np.asarray(s.outputs()) for s in segments])
                   if index.has_outputs(modality) else None)
        manifest["segments"][modality] = [write_segment(out, modality, number, 0, codes, outputs, opts.index_type,
                                                        opts.nlist, opts.nprobe)]
        merged[modality] = len(segments)
    manifest["generation"] = int(manifest.get("generation", 0)) + 1
    manifest = writer.commit(out, manifest, previous)
    said = ", ".join(f"{n} {m} segments into one" for m, n in merged.items()) or "nothing to merge (one segment each)"
    print(f"compacted {said} -> {out}")
    return manifest

