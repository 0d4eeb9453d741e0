"""Search an image or caption archive with a trained DUCH model: build an index of a run, then query it.

    python search.py index --run checkpoints/demo_32_test_default
    python search.py query --index checkpoints/demo_32_test_default/index --text "a river next to green fields" --html
    results.html
    python search.py serve --index checkpoints/demo_32_test_default/index     # then open http://127.0.0.1:8000/
"""
from __future__ import annotations

import argparse

from utils.errors import exit_on_user_error
from utils.search.command import run
from utils.search.query import DEFAULT_SHORTLIST
from utils.search.segments import DEFAULT_NPROBE, INDEX_TYPES, MIH_MIN_ROWS


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{index,query,serve}")

    ix = commands.add_parser("index",
                             help="encode a run's dataset (and new images) into packed codes and search structures",
                             description="Encode every image and caption of a run's dataset with its checkpoint; "
                                         "write packed codes, search structures (faiss binary indexes or exact "
                                         "multi-index tables), metadata and a manifest. Also indexes a codes file, "
                                         "and grows, shrinks or compacts an index.")
    ix.add_argument("--run", default=None, metavar="RUN_DIR",
                    help="run folder of main.py, e.g. checkpoints/ucm_64_test_default (needed to build an index; "
                         "--add, --remove and --compact read it from the index)")
    ix.add_argument("--codes", default=None, metavar="FILE.npz",
                    help="index the database codes of a codes file instead (db_img, db_txt, optional db_labels, as "
                         "evaluate.py reads them); searched by stored rows; needs --out")
    ix.add_argument("--add", action="store_true",
                    help="grow the index in --out (or RUN_DIR/index): encode only the --image-dir images it does not "
                         "hold yet, and/or the --captions lines, and append them")
    ix.add_argument("--captions", default=None, metavar="FILE",
                    help="with --add: new sentences, one per line as IMAGE<TAB>SENTENCE (IMAGE: an indexed image's "
                         "file name or path)")
    ix.add_argument("--compact", action="store_true",
                    help="merge the segments that --add made into one (rows and their numbers unchanged)")
    ix.add_argument("--remove", nargs="+", default=None, metavar="NAME_OR_ROW",
                    help="leave these images (file names, paths or image row numbers) and their captions out of every "
                         "search from now on")
    ix.add_argument("--data-dir", default=None,
                    help="folder of the dataset JSON and feature files (default: the files the run recorded)")
    ix.add_argument("--out", default=None, metavar="INDEX_DIR", help="index folder (default: RUN_DIR/index)")
    ix.add_argument("--checkpoint", choices=("best", "last"), default="best",
                    help="which model encodes (default: %(default)s)")
    ix.add_argument("--index-type", choices=INDEX_TYPES, default="auto",
                    help="flat: exact faiss IndexBinaryFlat; mih: exact multi-index hashing, sub-linear; ivf: faiss "
                         "IndexBinaryIVF, sub-linear, approximate; auto: mih from "
                         f"{MIH_MIN_ROWS:,} rows, else flat (default: %(default)s)")
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


@exit_on_user_error
def main(args: argparse.Namespace):
    return run(args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
