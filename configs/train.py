"""DUCH learning configuration: defaults of the original release and the paper."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

MODELS = ("duch",)  # --model names, lower case (any case is accepted)


@dataclass
class TrainConfig:
    dataset: str = "ucm"
    preset: str = "default"
    bit: int = 32
    model: str = "duch"
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

    def run_name(self) -> str:
        """``<dataset>_<bit>_<tag>_<preset>``: the run folder under ``out_dir``."""
        return f"{self.dataset}_{self.bit}_{self.tag}_{self.preset}"

    def to_json(self) -> dict:
        return asdict(self)


def check_config(cfg: TrainConfig) -> None:
    """Catch bad settings at the door, before any file is read (and before torch is imported)."""
    from configs.datasets import get_dataset
    from configs.presets import get_preset
    from configs.errors import DUCHError, did_you_mean

    get_dataset(cfg.dataset)
    get_preset(cfg.preset)
    if cfg.model not in MODELS:
        raise DUCHError(f"unknown model {cfg.model!r}{did_you_mean(cfg.model, MODELS)}; choose one of: {', '.join(MODELS)}")
    for name, value, low in (("bit", cfg.bit, 1), ("epochs", cfg.epochs, 1), ("batch-size", cfg.batch_size, 2), ("valid-freq", cfg.valid_freq, 1)):
        if value < low:
            raise DUCHError(f"--{name} must be at least {low}, got {value}")
    if len(cfg.contrastive_weights) != 3:
        raise DUCHError("--contrastive-weights takes three numbers: INTER INTRA_IMG INTRA_TXT")
    if not cfg.tau > 0:
        raise DUCHError(f"--tau must be positive, got {cfg.tau}")
