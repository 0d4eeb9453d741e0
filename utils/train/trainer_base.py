"""What the DUCH trainer and the baselines' trainer share: the epoch counters, the validation schedule,
the learning rate a run's log records, and the checkpoint state around the model and the optimisers."""
from __future__ import annotations

import torch

from configs.train import TrainConfig
from utils.retrieval.evaluation import EvalSet, encode_sets, evaluate_codes, instance_metrics
from utils.train.checkpoints import checkpoint_epoch, rng_state, set_rng_state


class EpochTrainer:
    """A trainer's state besides its networks: ``optimizers`` (checkpoint key -> optimiser, the first one's
    learning rate is the one logged), ``model_payload()`` (the model file) and, through ``extra_state`` and
    ``load_extra_state``, anything else a resumed run needs."""

    def __init__(self, cfg: TrainConfig, train_views: dict[str, torch.Tensor], query: EvalSet, db: EvalSet, device):
        self.cfg = cfg
        self.device = device
        self.views = train_views
        self.query, self.db = query, db
        self.epoch = -1  # last finished epoch
        self.best_score = -1.0
        self.best_epoch = -1
        self.show_progress = True  # the epoch bar (one rank's under torchrun)

    instance = None  # the validation images with all their captions (InstanceSet), for recall

    def validate(self) -> dict:
        """Class-level mAP (when the dataset has labels) and instance-level recall (when an instance set is given),
        of ``self.model`` (any network with ``encode(images, captions)``)."""
        out = {}
        if self.query.labels is not None:
            codes = encode_sets(self.model, self.query, self.db)
            out = evaluate_codes(codes, self.query.labels, self.db.labels, with_curves=False)
        if self.instance is not None:
            out["recall"] = instance_metrics(self.model, self.instance)
        return out

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def model_payload(self) -> dict:
        raise NotImplementedError

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, payload: dict) -> None:
        pass

    def is_validation_epoch(self, epoch: int) -> bool:
        """Every valid_freq epochs, and at the last epoch so that a best model always exists."""
        return (epoch + 1) % self.cfg.valid_freq == 0 or epoch + 1 == self.cfg.epochs

    @property
    def lr(self) -> float:
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    # ---- state -------------------------------------------------------------------------------------
    def state_payload(self) -> dict:
        return {
            **self.model_payload(),
            **{key: opt.state_dict() for key, opt in self.optimizers.items()},
            **self.extra_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch + 1,
            "rng": rng_state(),
            "config": self.cfg.to_json(),
        }

    def load_state(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(payload[key])
        self.load_extra_state(payload)
        self.epoch = checkpoint_epoch(payload) - 1  # counted from 0 inside the trainer
        self.best_score = float(payload["best_score"])
        self.best_epoch = checkpoint_epoch(payload, "best_epoch") - 1
        set_rng_state(payload["rng"])
