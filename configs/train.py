"""DUCH learning configuration: defaults of the original release and the paper."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from configs.datasets import SPLIT_PROTOCOLS, get_dataset, is_dataset_file
from configs.encoders import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    encoder_tag,
    image_encoder_kind,
    text_encoder_kind,
)
from configs.errors import DUCHError, did_you_mean
from configs.presets import get_preset

MODELS = ("duch",)  # --model names, lower case (any case is accepted)
# --method: DUCH, a baseline of the paper's tables (configs/baselines.py), or float: the features' own retrieval by
# cosine similarity, the reference row (no training, no bits)
METHODS = ("duch", "djsrh", "jdsh", "float")
FLOAT_METHOD = "float"
# --select: the validation score that keeps the best model: mAP@map_k averaged over the four directions, or the
# tie-aware mean recall (mR) of instance-level retrieval (the RSITMD/RSICD papers' figure)
SELECT_METRICS = ("map", "mr")


@dataclass
class TrainConfig:
    dataset: str = "ucm"  # a dataset name (configs/datasets.py) or the path of a captions JSON
    preset: str = "default"
    bit: int = 32
    model: str = "duch"
    method: str = "duch"
    tag: str = "test"
    epochs: int = 100
    batch_size: int = 256
    seed: int = 42
    # loss weights: L = L_c + alpha L_adv + beta L_q + gamma L_bb
    alpha: float = 0.01
    beta: float = 0.001
    gamma: float = 0.01
    contrastive_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # inter, intra-image, intra-text
    tau: float = 1.0  # NT-Xent temperature; 1 is the original's formula
    # optimisers and schedule
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lr_discriminator: float = 1e-4
    discriminator_betas: tuple[float, float] = (0.5, 0.9)
    discriminator_weight_decay: float = 1e-4
    lr_decay_freq: int = 50  # after epoch e with e % freq == 0, lr *= lr_decay
    lr_decay: float = 0.8
    lr_min: float = 1e-6
    valid_freq: int = 100
    map_k: int = 20  # retrieval_map_k: the mAP that selects the best model
    original_quirks: bool = False
    # files and devices, resolved at run time
    data_dir: str = "data"
    out_dir: str = "checkpoints"
    img_aug_emb: str | None = None
    device: str = "auto"
    files: dict = field(default_factory=dict)
    name: str | None = None  # --name: the dataset's name in file names (default: the JSON's stem)
    split: str | None = None  # duch, json or file (None: the dataset's default, duch for runs made before)
    split_file: str | None = None  # --split file PATH
    labels: str | None = None  # --labels CSV (wins over every other rule), or "none"
    select: str | None = None  # map or mr; None: map where the dataset has labels, mr where it has none
    # a baseline's hyperparameters (configs/baselines.py, with --param overrides); empty for DUCH
    method_params: dict = field(default_factory=dict)
    # the encoders that made the feature files (configs/encoders.py); runs made before they were named: the paper's
    encoder: str = DEFAULT_IMAGE_ENCODER
    text_encoder: str = DEFAULT_TEXT_ENCODER

    def dataset_key(self) -> str:
        """The dataset's name in run folders: its CLI name, or --name / the JSON's stem (lower case)."""
        if is_dataset_file(self.dataset):
            return (self.name or Path(self.dataset).stem).lower()
        return self.dataset

    def encoders_part(self) -> str:
        """``""`` for the paper's encoders, else ``@<tag>`` (one checkpoint for both) or ``@<image>+<text>``."""
        image, text = encoder_tag(self.encoder), encoder_tag(self.text_encoder)
        if image is None and text is None:
            return ""
        return f"@{image}" if image == text else f"@{image or DEFAULT_IMAGE_ENCODER}+{text or DEFAULT_TEXT_ENCODER}"

    def run_name(self) -> str:
        """``<dataset>_<bit>_<tag>_<preset>`` for DUCH, ``<method>_<dataset>_<bit>_<tag>_<preset>`` for a
        baseline, ``float_<dataset>_<tag>_<preset>`` for the float reference (no bits); features of other
        encoders than the paper's add ``encoders_part``: the run folder under ``out_dir``."""
        if self.method == FLOAT_METHOD:
            return f"{FLOAT_METHOD}_{self.dataset_key()}_{self.tag}_{self.preset}{self.encoders_part()}"
        name = f"{self.dataset_key()}_{self.bit}_{self.tag}_{self.preset}{self.encoders_part()}"
        return name if self.method == "duch" else f"{self.method}_{name}"

    def to_json(self) -> dict:
        return asdict(self)


def check_config(cfg: TrainConfig) -> None:
    """Catch bad settings at the door, before any file is read (and before torch is imported)."""
    get_dataset(cfg.dataset, cfg.name)
    get_preset(cfg.preset)
    if cfg.split is not None and cfg.split not in SPLIT_PROTOCOLS:
        raise DUCHError(f"unknown --split {cfg.split!r}; choose one of: duch, json, file PATH")
    if cfg.split == "file" and not cfg.split_file:
        raise DUCHError("--split file needs the path of a split.json: --split file PATH")
    if cfg.select is not None and cfg.select not in SELECT_METRICS:
        raise DUCHError(f"unknown --select {cfg.select!r}; choose one of: {', '.join(SELECT_METRICS)}")
    if cfg.model not in MODELS:
        raise DUCHError(f"unknown model {cfg.model!r}{did_you_mean(cfg.model, MODELS)}; choose one of: "
                        f"{', '.join(MODELS)}")
    if cfg.method not in METHODS:
        raise DUCHError(
            f"unknown method {cfg.method!r}{did_you_mean(cfg.method, METHODS)}; choose one of: {', '.join(METHODS)}"
        )
    for name, value, low in (("bit", cfg.bit, 1), ("epochs", cfg.epochs, 1), ("batch-size", cfg.batch_size, 2),
                             ("valid-freq", cfg.valid_freq, 1)):
        if value < low:
            raise DUCHError(f"--{name} must be at least {low}, got {value}")
    if len(cfg.contrastive_weights) != 3:
        raise DUCHError("--contrastive-weights takes three numbers: INTER INTRA_IMG INTRA_TXT")
    image_encoder_kind(cfg.encoder)
    text_encoder_kind(cfg.text_encoder)
    if cfg.original_quirks and (cfg.encoder, cfg.text_encoder) != (DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER):
        raise DUCHError("--original-quirks reproduces the original release, on the paper's ResNet18 and BERT features; "
                        "drop --encoder / --text-encoder, or --original-quirks")
    check_values(cfg)


# the loss sums exp(cos / tau) over a batch in float32 (cos up to 1): exp(1 / 0.0121) x 512 rows reaches float32's
# 3.4e38, so a smaller --tau overflows the loss to inf; 0.02 (exp(50)) leaves a wide margin
MIN_TAU = 0.02


def check_values(cfg: TrainConfig) -> None:
    """Types and ranges of every number (also what a hand-edited config.json holds): nan, inf, a string where
    a number belongs, a seed numpy cannot take, a temperature that overflows the loss."""
    from configs.checks import check_finite, check_int, check_seed

    for name in ("bit", "epochs", "batch_size", "valid_freq", "lr_decay_freq", "map_k"):
        check_int(f"--{name.replace('_', '-')}", getattr(cfg, name), 1)
    check_seed(cfg.seed)
    weights = ("alpha", "beta", "gamma", "lr", "weight_decay", "lr_discriminator", "discriminator_weight_decay",
               "lr_min")
    for name in weights:
        check_finite(f"--{name.replace('_', '-')}", getattr(cfg, name), 0.0)
    check_finite("lr_decay", cfg.lr_decay, 0.0, low_inclusive=False)
    for i, w in enumerate(cfg.contrastive_weights):
        check_finite(f"--contrastive-weights (number {i + 1})", w, 0.0)
    for i, b in enumerate(cfg.discriminator_betas):
        check_finite(f"discriminator_betas (number {i + 1})", b, 0.0)
    check_finite("--tau", cfg.tau, MIN_TAU)
    for name in ("dataset", "preset", "model", "tag", "data_dir", "out_dir", "device", "encoder", "text_encoder"):
        if not isinstance(getattr(cfg, name), str):
            raise DUCHError(f"{name} must be a string, got {getattr(cfg, name)!r}")
    import re

    # mps, xpu, meta: torch knows them, the project does not run there
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        raise DUCHError(f"--device {cfg.device!r}: use auto, cpu, cuda or cuda:N")
    for name in ("original_quirks",):
        if not isinstance(getattr(cfg, name), bool):
            raise DUCHError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
