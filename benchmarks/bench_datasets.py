"""NWPU-Captions-shaped run: 31,500 images, 157,500 captions (5 per image, or ragged with --ragged), 45 classes.

Generated class-structured features of the real widths (512 / 768) under an NWPU-layout JSON with the
release's parts (per class 560 train, 70 val, 70 test), then, through main.py and search.py:
reading the JSON and features, one training epoch (the last epoch also validates: val against train,
class-level mAP and instance recall), the whole ``--test`` (class-level mAP/P@K/PR with the 3,150 test
images against the 28,350 others, and instance-level recall within the test images and their captions,
both forms), and the search index build over every image and caption. Nothing holds a (captions x
captions) matrix: recall scores query chunks against the test captions.

Usage: python benchmarks/bench_datasets.py [--bit 64] [--ragged] [--full-recall]
(--full-recall also times instance recall over the whole dataset: 31,500 x 157,500 distances, chunked.)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main as duch_main  # noqa: E402
import search as duch_search  # noqa: E402
from configs import files  # noqa: E402
from configs.datasets import get_dataset  # noqa: E402
from utils.io import write_h5  # noqa: E402

N_CLASSES, PER_CLASS = 45, 700
PARTS = ("train",) * 560 + ("val",) * 70 + ("test",) * 70


def make_nwpu_shaped(data_dir: Path, ragged: bool, seed: int = 0) -> tuple[Path, int]:
    """NWPU-layout JSON (nwpu_shaped.json) and its feature files; returns (JSON path, captions)."""
    rng = np.random.default_rng(seed)
    n = N_CLASSES * PER_CLASS
    counts = rng.integers(1, 10, n) if ragged else np.full(n, 5)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    layout, j = {}, 0
    for c in range(N_CLASSES):
        entries = []
        for i in range(PER_CLASS):
            entry = {"filename": f"class{c}_{i + 1:03d}.jpg", "split": PARTS[i], "raw": f"caption 0 of image {j} ."}
            entry.update({f"raw_{m}": f"caption {m} of image {j} ." for m in range(1, int(counts[j]))})
            entries.append(entry)
            j += 1
        layout[f"class{c}"] = entries
    json_path = data_dir / "nwpu_shaped.json"
    json_path.write_text(json.dumps(layout))
    ds = get_dataset(str(json_path))
    latent = rng.normal(size=(N_CLASSES, 32))[labels] + 0.5 * rng.normal(size=(n, 32))
    image = np.maximum(latent @ rng.normal(size=(32, 512)) / 6 + rng.normal(size=(n, 512)), 0).astype(np.float32)
    owner = np.repeat(np.arange(n), counts)
    to_text = rng.normal(size=(32, 768)).astype(np.float32) / 6
    caption = (latent[owner] + 0.5 * rng.normal(size=(len(owner), 32))).astype(np.float32) @ to_text
    caption += rng.normal(size=caption.shape).astype(np.float32)
    write_h5(data_dir / files.image_emb_name(ds, "center_crop_only"), files.IMAGE_EMB_KEY, image, {"synthetic": 1})
    write_h5(data_dir / files.caption_emb_name(ds, "raw"), files.CAPTION_EMB_KEY, caption, {"synthetic": 1})
    return json_path, len(owner)


def timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    print(f"{label}: {elapsed:.2f} s")
    return out, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ragged", action="store_true", help="1 to 9 captions per image instead of 5")
    parser.add_argument("--full-recall", action="store_true", help="also time recall over all images and captions")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (json_path, n_captions), _ = timed("generate NWPU-shaped data", lambda: make_nwpu_shaped(data, args.ragged))
        print(f"{N_CLASSES * PER_CLASS} images, {n_captions} captions")
        from utils.data.dataset_json import load_dataset_json

        timed("read the NWPU-layout JSON", lambda: load_dataset_json(json_path))
        flags = ["--dataset", str(json_path), "--preset", "no_aug", "--out-dir", str(Path(tmp) / "runs"),
                 "--bit", str(args.bit), "--epochs", "1", "--batch-size", str(args.batch_size), "--device", args.device]

        def run_main(*extra):
            return duch_main.main(duch_main.get_args_parser().parse_args([*flags, *extra]))

        timed("main.py: load + 1 epoch + validation + test", run_main)
        run_dir = Path(tmp) / "runs" / f"nwpu_shaped_{args.bit}_test_no_aug"
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
        print(f"one training epoch: {history[0]['time_s']:.2f} s")
        tested, _ = timed("main.py --test (load + both metric families + files)",
                               lambda: run_main("--test"))
        print(f"--test scoring alone (mAP/P@K/PR 4 directions + recall both forms): {tested['eval_time_s']:.2f} s")
        r = tested["recall"]
        print(f"recall within {r['n_images']} test images / {r['n_captions']} captions: mR {r['index']['mr']:.2f} "
              f"(ties by index), {r['tie_aware']['mr']:.2f} (tie-aware); mAP@20 avg {tested['map@20']['avg']:.3f}")
        timed("search.py index (all images and captions)",
              lambda: duch_search.main(duch_search.get_args_parser().parse_args(
                  ["index", "--run", str(run_dir), "--no-progress"])))
        if args.full_recall:
            from utils.retrieval.recall import instance_recall

            idx = np.load(run_dir / "index" / "codes_images.npy")
            cap = np.load(run_dir / "index" / "codes_captions.npy")
            lines = (run_dir / "index" / "metadata_captions.jsonl").read_text().splitlines()
            meta = [json.loads(line)["image_row"] for line in lines]
            timed(f"instance recall over all {len(idx)} images x {len(cap)} captions",
                  lambda: instance_recall(idx, cap, np.asarray(meta), bits=args.bit))


if __name__ == "__main__":
    main()
