"""Caption features: the dataset captions (raw and every augmented set in the JSON) embedded into HDF5 files.

Writes ``caption_emb_DS_aug.h5`` (raw captions) and ``caption_emb_DS_aug_<set>.h5`` for each of
``aug_rb``, ``aug_bt_prob``, ``aug_bt_chain`` present, key ``caption_emb``, shape (5N, width),
row ``5*j + i`` = sentence i of image j (docs/formats.md). The paper's encoder pools BERT hidden states
(``--model``); ``--encoder`` names a CLIP-family checkpoint instead, whose text tower and projection embed the
captions as its tokenizer takes them, into files that carry its tag (``caption_emb_DS_aug.<tag>.h5``).
``captions_embed.py`` is the command line of ``embed_caption_sets``; the flags are described in docs/scripts.md.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from configs.datasets import get_dataset
from configs.encoders import DEFAULT_TEXT_ENCODER, encoder_tag, text_encoder_kind
from configs.files import (
    CAPTION_AUG_KEYS,
    CAPTION_EMB_KEY,
    RAW_CAPTION_KEY,
    augmented_json_name,
    caption_emb_name,
    current_dataset_json,
    data_path,
    source_dataset_json,
)
from models.text_encoder import (
    DEFAULT_HIDDEN_STATES,
    DEFAULT_MAX_LENGTH,
    DEFAULT_TEXT_MODEL,
    PUNCTUATION_REMOVED,
    embed_captions,
    load_text_model,
)
from utils.data.dataset_json import captions, load_dataset_json, sentence_keys_present, warn_dropped
from utils.errors import DUCHError
from utils.io import check_writable_dir, write_h5
from utils.preprocess import resume
from utils.preprocess.options import ScriptOptions
from utils.runtime import resolve_device

DEFAULT_BATCH_SIZE = 64


@dataclass
class CaptionFeatureOptions(ScriptOptions):
    """Every setting of one caption embedding run (the flags of ``captions_embed.py``, same names and defaults)."""

    dataset: str = "ucm"  # a dataset name or the path of a captions JSON
    name: str | None = None  # a dataset file's name in file names (default: its stem)
    data_dir: str | Path | None = None  # default: the dataset's
    encoder: str = DEFAULT_TEXT_ENCODER  # configs/encoders.py: the paper's BERT pooling, or a CLIP-family checkpoint
    model: str = DEFAULT_TEXT_MODEL
    max_length: int = DEFAULT_MAX_LENGTH
    hidden_states: int = DEFAULT_HIDDEN_STATES
    operator: str = "sum"
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "auto"
    overwrite: bool = False
    original_quirks: bool = False
    progress: bool = True


def find_dataset_json(ds, data_dir: Path) -> Path:
    """``augmented_DS.json`` when caption augmentation has run, else ``DS.json``."""
    found = current_dataset_json(ds, data_dir)
    if found.exists():
        return found
    augmented, plain = data_path(data_dir, augmented_json_name(ds)), source_dataset_json(ds, data_dir)
    raise DUCHError(
        f"dataset JSON not found: neither {augmented} nor {plain} exists; put the {ds.name} captions file "
        f"{plain.name} in {data_dir} (see README, Data), or pass --data-dir to the folder that holds it"
    )


def check_existing(path: Path, key: str, settings: dict, rows: int) -> str | None:
    """Why an existing feature file cannot be kept as the ``key`` set for these settings, or None when it can."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if CAPTION_EMB_KEY not in f:
                return f"it has no {CAPTION_EMB_KEY!r} dataset"
            dset = f[CAPTION_EMB_KEY]
            attrs, shape = dict(dset.attrs), dset.shape
    except OSError as err:
        return f"it is not a readable HDF5 file ({' '.join(str(err).split())[:120]})"
    if shape[0] != rows:
        return f"it has {shape[0]} rows, the JSON has {rows} captions"
    made = {k: (v.item() if hasattr(v, "item") else v) for k, v in ((k, attrs.get(k)) for k in settings)}
    if not attrs.get("model"):
        return None  # a file without provenance (e.g. the authors' published features): kept as it is
    differ = [f"{k} {made[k]} (now {v})" for k, v in settings.items() if str(made[k]) != str(v)]
    return f"it was made with other settings: {', '.join(differ)}" if differ else None


def embed_caption_sets(opts: CaptionFeatureOptions) -> dict[str, Path]:
    """Embed every caption set whose file is missing (all of them with --overwrite); returns {sentence key: file}.

    Ctrl-C anywhere is one line and exit 130; the sets already written stay, the next run does the rest."""
    progress: dict[str, list] = {"todo": [], "done": []}
    try:
        return _run(opts, progress)
    except KeyboardInterrupt:
        left = [k for k in progress["todo"] if k not in progress["done"]]
        print(f"interrupted: finished sets kept ({', '.join(progress['done']) or 'none'}), not written: "
              f"{', '.join(left) or 'none'}; run the same command again to embed only those", file=sys.stderr)
        raise SystemExit(130) from None


def _run(opts: CaptionFeatureOptions, progress: dict) -> dict[str, Path]:
    ds = get_dataset(opts.dataset, opts.name)
    data_dir = Path(opts.data_dir if opts.data_dir is not None else ds.default_data_dir)
    if opts.batch_size < 1:
        raise DUCHError(f"--batch-size must be at least 1 (got {opts.batch_size})")
    if opts.hidden_states < 1:
        raise DUCHError(f"--hidden-states must be at least 1 (got {opts.hidden_states})")
    if opts.max_length < 2:
        raise DUCHError(f"--max-length must be at least 2 (got {opts.max_length})")

    kind = text_encoder_kind(opts.encoder)
    if kind == "checkpoint" and opts.original_quirks:
        raise DUCHError(f"--original-quirks reproduces the original release's BERT pooling; it does not apply to "
                        f"--encoder {opts.encoder}")
    json_path = find_dataset_json(ds, data_dir)
    data = load_dataset_json(json_path, ds=ds)
    warn_dropped(data)
    if RAW_CAPTION_KEY not in sentence_keys_present(data, [RAW_CAPTION_KEY]):
        raise DUCHError(f"{json_path}: not every sentence has a {RAW_CAPTION_KEY!r} caption")
    keys = [RAW_CAPTION_KEY] + sentence_keys_present(data, CAPTION_AUG_KEYS.values())
    texts = {key: captions(data, key) for key in keys}  # every caption checked before the model loads
    outputs = {key: data_path(data_dir, caption_emb_name(ds, key, opts.encoder)) for key in keys}
    if kind == "paper":
        settings = {"model": opts.model, "max_length": opts.max_length, "hidden_states": opts.hidden_states,
                    "operator": opts.operator, "original_quirks": int(opts.original_quirks)}
    else:  # the checkpoint fixes its tokenizer, caption length and pooling
        settings = {"model": opts.encoder, "encoder_kind": kind}

    # per caption set: a finished file made with these settings is kept; anything else in the way is named now
    todo = dict(outputs) if opts.overwrite else {}
    if not opts.overwrite:
        for key, path in outputs.items():
            if not path.exists():
                todo[key] = path
                continue
            why = check_existing(path, key, settings, len(texts[key]))
            if why is not None:
                raise DUCHError(f"output already exists: {path}, and cannot be kept: {why}; pass --overwrite to "
                                "replace")
        kept = [str(outputs[k]) for k in outputs if k not in todo]
        if kept:
            print(f"kept (already made with these settings): {', '.join(kept)}")
    if not todo:
        print("every caption set is already embedded; pass --overwrite to recompute")
        return outputs
    check_writable_dir(data_dir, "data folder")
    progress["todo"] = list(todo)

    from utils import distributed

    ctx = distributed.init_from_env(opts.device) if distributed.torchrun_world_size() > 1 else distributed.context()
    try:
        written = _embed_all(opts, ds, json_path, data, texts, outputs, todo, settings, progress, ctx)
        distributed.finish()
        return written
    finally:
        distributed.shutdown()


def _text_encoder(opts: CaptionFeatureOptions, device, ds, say) -> tuple:
    """(embed(texts, **kw), width, provenance attributes, random weights) of the encoder the options name."""
    if text_encoder_kind(opts.encoder) == "checkpoint":
        from models.clip_encoder import embed_texts, load_clip_checkpoint

        checkpoint = load_clip_checkpoint(opts.encoder, device, images=False, text=True)
        attrs = {"model_source": checkpoint.source, "encoder_name": opts.encoder,
                 "encoder_tag": encoder_tag(opts.encoder), "encoder": checkpoint.describe("text"),
                 "max_length": checkpoint.max_tokens,
                 "pooling": ("the last position, captions padded to the full length (SigLIP)"
                             if checkpoint.pads_to_max_length else "the end-of-text token (CLIP)"),
                 "preprocessing": f"the checkpoint's tokenizer ({type(checkpoint.tokenizer).__name__}), truncated "
                                  f"to {checkpoint.max_tokens} tokens"}

        def embed(texts, **kwargs):
            return embed_texts(checkpoint, texts, batch_size=opts.batch_size, **kwargs)

        return embed, checkpoint.width, attrs, checkpoint.random_weights
    text_model = load_text_model(opts.model, device)
    width = text_model.width(opts.hidden_states, opts.operator)
    if ds.caption_dim is not None and width != ds.caption_dim:
        say(f"warning: width {width} differs from the {ds.caption_dim} the {ds.name} features normally have",
            file=sys.stderr)
    attrs = {"model_source": text_model.source,
             "pooling": (f"mean over all {opts.max_length} positions, padding included (original quirk)"
                         if opts.original_quirks else "mean over real tokens (attention mask)"),
             "preprocessing": f"lower-case, remove {' '.join(PUNCTUATION_REMOVED)}"}

    def embed(texts, **kwargs):
        return embed_captions(text_model, texts, max_length=opts.max_length, hidden_states=opts.hidden_states,
                              operator=opts.operator, original_quirks=opts.original_quirks,
                              batch_size=opts.batch_size, **kwargs)

    return embed, width, attrs, text_model.random_weights


def _embed_all(opts: CaptionFeatureOptions, ds, json_path: Path, data: dict, texts: dict, outputs: dict, todo: dict,
               settings: dict,
               progress: dict, ctx) -> dict[str, Path]:
    """Under torchrun each rank embeds its run of the one-process batches into a part file; rank 0 merges them."""
    device = ctx.device if ctx.distributed else resolve_device(opts.device)
    say = print if ctx.is_main else (lambda *a, **k: None)
    embed, width, encoder_attrs, random_weights = _text_encoder(opts, device, ds, say)
    launch = f"; {ctx.world_size} ranks" if ctx.distributed else ""
    paper = text_encoder_kind(opts.encoder) == "paper"
    say(f"{json_path}: {len(data['images'])} images, caption sets to embed: {', '.join(todo)}; "
        f"model {opts.model if paper else opts.encoder} on {device}{launch}, width {width}")
    if random_weights and ctx.is_main:
        warnings.warn(f"{'--model ' + opts.model if paper else opts.encoder}: the text encoder has RANDOM weights "
                      "(its config.json says so); its features are not those of a pretrained model (fine for tests "
                      "and the offline demo, not for results)",
                      UserWarning, stacklevel=2)
    attrs = {
        **settings,
        **encoder_attrs,
        "random_weights": random_weights,
        "source_json": str(json_path),
        "world_size": ctx.world_size,
    }
    for key, path in todo.items():
        kwargs = dict(progress=opts.progress and ctx.is_main, desc=f"embed {key}")
        if not ctx.distributed:
            emb = embed(texts[key], **kwargs)
            write_h5(path, CAPTION_EMB_KEY, emb, {**attrs, "sentence_key": key})
        else:
            _embed_shard(embed, width, texts[key], path, {**attrs, "sentence_key": key}, opts, kwargs, ctx)
        progress["done"].append(key)
        say(f"wrote {path}: {CAPTION_EMB_KEY} {len(texts[key])} x {width} float32 ({key}{launch})")
    return outputs


def _embed_shard(embed, width: int, texts, path: Path, attrs: dict, opts: CaptionFeatureOptions, kwargs: dict,
                 ctx) -> None:
    """This rank's part file (kept from an interrupted run with the same settings), then rank 0's merge."""
    import json

    from utils import distributed

    kept = {"max_length": opts.max_length, "hidden_states": opts.hidden_states, "operator": opts.operator,
            "original_quirks": opts.original_quirks, "batch_size": opts.batch_size}
    digest = _texts_digest(texts)

    def fingerprint(rank):
        return json.dumps({"attrs": attrs, "settings": kept, "rows": len(texts), "sha": digest, "rank": rank},
                          sort_keys=True, default=str)

    part = resume.part_path(path, ctx.rank, ctx.world_size)
    if resume.load_piece(part, fingerprint(ctx.rank)) is None:
        rows, emb = embed(texts, shard=(ctx.rank, ctx.world_size), **kwargs)
        resume.save_piece(part, fingerprint(ctx.rank), rows=rows, features=emb)
    else:
        print(f"rank {ctx.rank}: {part} holds this rank's {path.name} rows already", file=sys.stderr)
    distributed.barrier()
    if not ctx.is_main:
        return

    def load(rank: int, part_file: Path):
        saved = resume.load_piece(part_file, fingerprint(rank))
        return None if saved is None else (saved["rows"], saved["features"])

    resume.merge_parts(path, CAPTION_EMB_KEY, (len(texts), width), ctx.world_size, attrs, load, "is missing")


def _texts_digest(texts) -> str:
    import hashlib

    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()
