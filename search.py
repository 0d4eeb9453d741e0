"""Search an image or caption archive with a trained DUCH model: build an index of a run, then query it.

    python search.py index --run checkpoints/demo_32_test_default
    python search.py query --index checkpoints/demo_32_test_default/index --text "a river next to green fields" --html
    results.html
    python search.py serve --index checkpoints/demo_32_test_default/index     # then open http://127.0.0.1:8000/
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from utils.errors import DUCHError, exit_on_user_error
from utils.io import check_output_file, write_text
from utils.search.index import DEFAULT_NPROBE, INDEX_TYPES, IndexOptions, build_index
from utils.search.page import write_page
from utils.search.query import DEFAULT_SHORTLIST, Query, QueryEncoder, SearchIndex, format_table, search


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{index,query,serve}")

    ix = commands.add_parser("index",
                             help="encode a run's dataset (and new images) into packed codes and faiss indexes",
                             description="Encode every image and caption of a run's dataset with its checkpoint; "
                                         "write packed codes, faiss binary indexes, metadata and a manifest.")
    ix.add_argument("--run", required=True, metavar="RUN_DIR",
                    help="run folder of main.py, e.g. checkpoints/ucm_64_test_default")
    ix.add_argument("--data-dir", default=None,
                    help="folder of the dataset JSON and feature files (default: the files the run recorded)")
    ix.add_argument("--out", default=None, metavar="INDEX_DIR", help="index folder (default: RUN_DIR/index)")
    ix.add_argument("--checkpoint", choices=("best", "last"), default="best",
                    help="which model encodes (default: %(default)s)")
    ix.add_argument("--index-type", choices=INDEX_TYPES, default="flat",
                    help="flat: exact faiss IndexBinaryFlat; ivf: IndexBinaryIVF, sub-linear, approximate (default: "
                         "%(default)s)")
    ix.add_argument("--nlist", type=int, default=None,
                    help="ivf: inverted lists (default: about 4 sqrt(n), at least 39 codes each)")
    ix.add_argument("--nprobe", type=int, default=DEFAULT_NPROBE,
                    help="ivf: lists visited per query (default: %(default)s)")
    ix.add_argument("--image-dir", default=None, metavar="DIR",
                    help="also index new images: every tif/tiff/png/jpg below DIR (recursively), encoded as the run's "
                         "image features")
    ix.add_argument("--dataset-image-dir", default=None, metavar="DIR",
                    help="where the dataset's own images are, for thumbnails (default: <data folder>/<dataset image "
                         "folder>)")
    ix.add_argument("--weights", default=None,
                    help="image encoder for --image-dir and image queries when the image features do not record "
                         "theirs: imagenet, none or a ResNet18 .pth file (overrides the record when given)")
    ix.add_argument("--img-aug", default="center_crop_only",
                    help="with --weights: the transform set the image features were made with (default: %(default)s)")
    ix.add_argument("--crop-size", type=int, nargs=2, default=[200, 200], metavar=("CROP_H", "CROP_W"),
                    help="with --weights: crop size (default: 200 200)")
    ix.add_argument("--image-seed", type=int, default=42,
                    help="with --weights none: the seed images_augment.py used (default: %(default)s)")
    ix.add_argument("--no-normalize", action="store_true",
                    help="with --weights: the features were made without ImageNet normalisation")
    ix.add_argument("--bit-depth", type=int, default=None, metavar="BITS",
                    help="significant bits of 16-bit images, as images_augment.py --bit-depth (default: the features' "
                         "record, else 16)")
    ix.add_argument("--text-model", default=None,
                    help="text model for text queries when the caption features do not record theirs (HF name or "
                         "folder; overrides the record)")
    ix.add_argument("--text-max-length", type=int, default=64,
                    help="with --text-model: tokens per caption (default: %(default)s)")
    ix.add_argument("--text-hidden-states", type=int, default=4,
                    help="with --text-model: last hidden states combined (default: %(default)s)")
    ix.add_argument("--text-operator", choices=("sum", "concat"), default="sum",
                    help="with --text-model: (default: %(default)s)")
    ix.add_argument("--text-original-quirks", action="store_true",
                    help="with --text-model: features padded to max length and averaged over all positions")
    ix.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    ix.add_argument("--batch-size", type=int, default=64, help="images per encoder batch (default: %(default)s)")
    ix.add_argument("--num-workers", type=int, default=0, help="image-loading worker processes (default: %(default)s)")
    ix.add_argument("--shard-size", type=int, default=1024,
                    help="--image-dir images per saved shard (default: %(default)s)")
    ix.add_argument("--overwrite", action="store_true", help="rebuild an existing index")
    ix.add_argument("--no-progress", action="store_true", help="no progress bar")

    q = commands.add_parser("query", help="search an index by a sentence, an image or a stored row",
                            description="Rank an index's items by Hamming distance to a query (ties by row).")
    q.add_argument("--index", required=True, metavar="INDEX_DIR", help="index folder written by search.py index")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", default=None, help="a sentence")
    what.add_argument("--image", default=None, metavar="PATH", help="an image file (tif, png, jpg; 8 or 16 bit)")
    what.add_argument("--row", type=int, default=None, help="a stored row of the index (with --modality)")
    what.add_argument("--queries", default=None, metavar="FILE",
                      help="one query per line: a line naming an existing file is an image, any other a sentence; "
                           "writes JSON lines")
    q.add_argument("--modality", choices=("image", "caption"), default=None, help="with --row: which stored rows")
    q.add_argument("--target", choices=("images", "captions"), default="images",
                   help="what to retrieve (default: %(default)s)")
    q.add_argument("-k", "--k", type=int, default=10, dest="k", help="results per query (default: %(default)s)")
    q.add_argument("--rerank", action="store_true",
                   help="re-order a Hamming shortlist by cosine of the continuous outputs")
    q.add_argument("--shortlist", type=int, default=DEFAULT_SHORTLIST,
                   help="--rerank: Hamming candidates re-ordered (default: %(default)s)")
    q.add_argument("--nprobe", type=int, default=None, help="ivf index: lists visited per query (default: the index's)")
    q.add_argument("--class", action="append", default=None, dest="classes", metavar="NAME",
                   help="only results of this class (repeat for several); applied before the top k is cut")
    q.add_argument("--split", action="append", default=None, dest="splits", metavar="NAME",
                   help="only results of this split: train, query, db or new (--image-dir images); repeatable")
    q.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON (JSON lines with --queries)")
    q.add_argument("--html", default=None, metavar="OUT", help="write a self-contained results page with thumbnails")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    q.add_argument("--overwrite", action="store_true", help="replace existing --json / --html files")
    q.add_argument("--quiet", action="store_true", help="no table on the console")

    from utils.search.server import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT

    sv = commands.add_parser("serve", help="answer searches over HTTP and serve a search page in the browser",
                             description="Load an index and its models once, then answer searches over HTTP (the "
                                         "JSON of query --json) and serve a search page at /, until Ctrl-C.")
    sv.add_argument("--index", required=True, metavar="INDEX_DIR", help="index folder written by search.py index")
    sv.add_argument("--host", default=DEFAULT_HOST,
                    help="address to listen on (default: %(default)s, this machine only; 0.0.0.0: every network)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    sv.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    sv.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                    help="largest image upload, in MiB (default: %(default)s)")
    sv.add_argument("--access-log", action="store_true", help="print a line per request")
    return parser


def run_index(args: argparse.Namespace) -> dict:
    from pathlib import Path


    opts = IndexOptions(
        run_dir=Path(args.run), data_dir=args.data_dir, out=args.out, checkpoint=args.checkpoint,
        index_type=args.index_type,
        nlist=args.nlist, nprobe=args.nprobe, image_dir=args.image_dir, dataset_image_dir=args.dataset_image_dir,
        weights=args.weights, img_aug=args.img_aug, crop_size=tuple(args.crop_size), image_seed=args.image_seed,
        no_normalize=args.no_normalize, bit_depth=args.bit_depth, text_model=args.text_model,
        text_max_length=args.text_max_length,
        text_hidden_states=args.text_hidden_states, text_operator=args.text_operator,
        text_original_quirks=args.text_original_quirks, device=args.device, batch_size=args.batch_size,
        num_workers=args.num_workers, shard_size=args.shard_size, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    from utils import distributed

    ctx = distributed.init_from_env(args.device) if distributed.torchrun_world_size() > 1 else distributed.context()
    start = time.perf_counter()
    try:
        manifest = build_index(opts)
        distributed.finish()
    finally:
        distributed.shutdown()
    if not ctx.is_main:
        return {}
    counts = manifest["counts"]
    out = Path(args.out) if args.out else Path(args.run) / "index"
    print(f"indexed {counts['images']} images ({counts['new_images']} from --image-dir) and {counts['captions']} "
          f"captions, {manifest['bit']} bits, {manifest['index']['type']} index, checkpoint "
          f"{manifest['checkpoint']['path']} (epoch {manifest['checkpoint']['epoch']}), in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    return manifest


def run_query(args: argparse.Namespace) -> list[dict]:
    from pathlib import Path


    if args.row is not None and args.modality is None:
        raise DUCHError("--row needs --modality image or --modality caption")
    if args.queries and args.html:
        raise DUCHError("--html shows one query; use --json with --queries")
    for flag, out in (("--json", args.json), ("--html", args.html)):
        if out:
            check_output_file(out, args.overwrite, flag)
    if args.text is not None:
        queries = [Query("text", text=args.text)]
    elif args.image is not None:
        queries = [Query("image", path=args.image)]
    elif args.row is not None:
        queries = [Query("row", row=args.row, modality=args.modality)]
    else:
        path = Path(args.queries)
        if not path.is_file():
            raise DUCHError(f"--queries file not found: {path}")
        queries = [Query.parse_line(line) for line in read_query_lines(path) if line.strip()]
        if not queries:
            raise DUCHError(f"--queries file {path} holds no query")

    index = SearchIndex.open(args.index)  # before transformers loads: a mistyped --index answers at once
    from transformers.utils import logging as hf_logging  # lazy: start-up time

    hf_logging.disable_progress_bar()  # "Loading weights" bars say nothing to a searcher
    index.set_nprobe(args.nprobe)
    encoder = QueryEncoder(index, args.device)
    if args.queries:
        encoder.encode(list({q.kind: q for q in reversed(queries)}.values()))  # load the models before the clock starts
    start = time.perf_counter()
    results = search(index, encoder, queries, target=args.target, k=args.k, rerank=args.rerank,
                     shortlist=args.shortlist, classes=args.classes, splits=args.splits)
    elapsed = time.perf_counter() - start
    if not args.quiet and not args.queries:  # --queries: the JSON lines are the output
        for result in results:
            print(format_table(result) + "\n")
    if args.queries:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
        if args.json:
            write_text(args.json, lines)
        else:
            sys.stdout.write(lines)
        print(f"{len(results)} queries in {elapsed:.3f} s: {len(results) / max(elapsed, 1e-9):.1f} queries/s "
              f"(models loaded once, before timing)", file=sys.stderr)
    elif args.json:
        write_text(args.json, json.dumps(results[0], indent=2, ensure_ascii=False) + "\n")
    if args.html:
        m = index.manifest
        write_page(args.html, results[0],
                   about=f"{m['bit']}-bit codes of {m['run']['dir']} ({m['checkpoint']['which']} "
                   f"checkpoint, epoch {m['checkpoint']['epoch']}), {index.size(args.target)} {args.target}")
        print(f"wrote {args.html}")
    return results


def read_query_lines(path) -> list[str]:
    """The lines of a --queries file, which must be UTF-8 text: a bad byte is named by line, not a traceback."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        bad = f"byte 0x{data[err.start]:02x} on line {line}"
        raise DUCHError(f"--queries file {path} is not UTF-8 text: {bad}") from None


@exit_on_user_error
def main(args: argparse.Namespace):
    if args.command == "index":
        return run_index(args)
    if args.command == "serve":
        from utils.search.server import serve

        return serve(args.index, args.host, args.port, args.device, args.max_upload_mb, args.access_log)
    return run_query(args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
