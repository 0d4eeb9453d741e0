"""search.py's commands: index (encode a run's dataset into an index folder), query (rank an index's
items for a query) and serve (answer searches over HTTP), bound to the script's flags."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from utils.errors import DUCHError
from utils.io import check_output_file, write_text
from utils.search.index import IndexOptions, build_index
from utils.search.page import write_page
from utils.search.query import Query, QueryEncoder, SearchIndex, format_table, search


def run_index(args: argparse.Namespace) -> dict:
    """search.py index: encode a run's dataset (and --image-dir images) into an index folder."""
    if args.codes and args.run:
        raise DUCHError("give --run (index a trained run) or --codes (index a codes file), not both")
    if (args.add or args.remove or args.compact) and (args.codes or args.overwrite):
        raise DUCHError("--add / --remove / --compact change an existing index: without --codes and --overwrite")
    if args.compact and (args.add or args.remove):
        raise DUCHError("--compact is a step of its own: run it after --add / --remove")
    if args.captions and not args.add:
        raise DUCHError("--captions adds sentences to an index: use it with --add")
    if not (args.run or args.codes or ((args.add or args.remove or args.compact) and args.out)):
        raise DUCHError("search.py index needs --run RUN_DIR (or --codes FILE.npz --out DIR; --add / --remove / "
                        "--compact need --run or --out)")
    opts = IndexOptions(
        run_dir=Path(args.run) if args.run else None, codes=args.codes, add=args.add, remove=args.remove or [],
        compact=args.compact,
        captions=args.captions, data_dir=args.data_dir, out=args.out, checkpoint=args.checkpoint,
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
        manifest = build_index(opts, index_action(opts))
        distributed.finish()
    finally:
        distributed.shutdown()
    if not ctx.is_main:
        return {}
    counts = manifest["counts"]
    out = Path(args.out) if args.out else Path(args.run) / "index"
    if args.add or args.remove or args.compact:  # grow_index / compact_index printed what they changed
        return manifest
    if args.codes:
        print(f"{counts['images']} image rows and {counts['captions']} caption rows, {manifest['bit']} bits, "
              f"{manifest['index']['type']} index, in {time.perf_counter() - start:.1f} s -> {out}")
        return manifest
    print(f"indexed {counts['images']} images ({counts['new_images']} from --image-dir) and {counts['captions']} "
          f"captions, {manifest['bit']} bits, {manifest['index']['type']} index, checkpoint "
          f"{manifest['checkpoint']['path']} (epoch {manifest['checkpoint']['epoch']}), in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    return manifest


def index_action(opts: IndexOptions):
    """What search.py index does besides building a run's index: None (the build), or the function of --codes or
    --add / --remove."""
    if opts.codes is not None:
        from utils.search.codes_index import build_from_codes

        return build_from_codes
    if opts.add or opts.remove:
        from utils.search.grow import grow_index

        return grow_index
    if opts.compact:
        from utils.search.grow import compact_index

        return compact_index
    return None


def run_query(args: argparse.Namespace) -> list[dict]:
    """search.py query: rank an index's items for a sentence, an image, a stored row or a --queries file."""
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
    if any(q.kind != "row" for q in queries):
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
                   f"checkpoint, epoch {m['checkpoint']['epoch']}), {index.size(args.target)} {args.target}",
                   roots=index.image_folders())
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


def run(args: argparse.Namespace):
    """search.py: the index, query or serve command its flags name."""
    if args.command == "index":
        return run_index(args)
    if args.command == "serve":
        from utils.search.server import serve

        return serve(args.index, args.host, args.port, args.device, args.max_upload_mb, args.access_log)
    return run_query(args)
