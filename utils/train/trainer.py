"""The DUCH training loop (docs/method.md): features live on the device, batches are index tensors."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from configs.train import TrainConfig
from models.duch import DUCH
from utils.errors import DUCHError
from utils.retrieval.evaluation import EvalSet
from utils.train import losses
from utils.train.trainer_base import EpochTrainer

VIEWS = ("i1", "i2", "t1", "t2")  # image, augmented image, caption, augmented caption
LOSS_TERMS = ("total", "contrastive", "adversarial", "quantization", "bit_balance", "discriminator")


def batch_indices(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of ``order``; a last batch of one sample joins the one before it.

    Batch norm cannot train on one sample, and skipping it would leave that sample's output rows (and
    so its B row) at zero for the epoch.
    """
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


class DUCHTrainer(EpochTrainer):
    """Holds everything a run needs to continue: model, optimisers, B, output buffers, epoch."""

    fuse_views = True  # both views of a modality through one GEMM per layer (HashingNet.forward_views)

    def __init__(
        self, cfg: TrainConfig, train_views: dict[str, torch.Tensor], query: EvalSet, db: EvalSet, device,
        model: DUCH | None = None,
    ):
        """``model`` replaces the DUCH networks (tests pass tiny nets with known gradients)."""
        super().__init__(cfg, train_views, query, db, device)
        n_train = train_views["i1"].shape[0]
        if model is None:
            model = DUCH(train_views["i1"].shape[1], train_views["t1"].shape[1], cfg.bit)
        self.model = model.to(device)
        # fused: one kernel per step over all parameters (same update; 0.4-0.7 s of a 4.5 s RSICD-shaped CPU epoch)
        self.opt_hash = torch.optim.Adam(self.model.hashing_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         fused=True)
        self.opt_disc = torch.optim.Adam(
            self.model.discriminator.parameters(), lr=cfg.lr_discriminator,
            betas=tuple(cfg.discriminator_betas), weight_decay=cfg.discriminator_weight_decay, fused=True,
        )
        self.B = torch.sign(torch.randn(n_train, cfg.bit)).to(device)
        self.buffers = {v: torch.zeros(n_train, cfg.bit, device=device) for v in VIEWS}

    # ---- one epoch ---------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        n_train = self.B.shape[0]
        order = torch.randperm(n_train)  # on the CPU: the same order on every device
        sums = dict.fromkeys(LOSS_TERMS, 0.0)
        for idx in batch_indices(order, cfg.batch_size):
            idx = idx.to(self.device)
            batch_losses = self._train_step(idx)
            for term, value in batch_losses.items():
                sums[term] += value  # tensors on the device: read once per epoch, not once per batch
        sums = {term: float(value) for term, value in sums.items()}
        self._update_codes()
        if epoch % cfg.lr_decay_freq == 0:
            for group in self.opt_hash.param_groups:
                group["lr"] = max(group["lr"] * cfg.lr_decay, cfg.lr_min)
        self.epoch = epoch
        return sums

    def _hash_outputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four views' hash outputs for the rows ``idx`` (a distributed trainer computes its shard and gathers)."""
        img_net, txt_net = self.model.image_net, self.model.text_net
        t2_source = "t1" if self.cfg.original_quirks else "t2"  # QUIRK: the original fed txt1 where txt2 belongs
        if self.fuse_views and hasattr(img_net, "forward_views") and hasattr(txt_net, "forward_views"):
            h_i1, h_i2 = img_net.forward_views(self.views["i1"][idx], self.views["i2"][idx])
            h_t1, h_t2 = txt_net.forward_views(self.views["t1"][idx], self.views[t2_source][idx])
            return {"i1": h_i1, "i2": h_i2, "t1": h_t1, "t2": h_t2}
        return {
            "i1": img_net(self.views["i1"][idx]),
            "i2": img_net(self.views["i2"][idx]),
            "t1": txt_net(self.views["t1"][idx]),
            "t2": txt_net(self.views[t2_source][idx]),
        }

    def _reduce_gradients(self) -> None:
        """Between the hashing loss's backward and its step: a distributed trainer sums gradients over ranks."""

    def _train_step(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch: discriminator step, then hashing step; the loss terms as detached 0-d tensors."""
        cfg, model = self.cfg, self.model
        disc = model.discriminator
        h = self._hash_outputs(idx)
        for view in VIEWS:
            self.buffers[view][idx] = h[view].detach()

        # discriminator: captions are "real", images "fake"
        self.opt_disc.zero_grad(set_to_none=True)
        loss_disc = losses.discriminator_loss(disc, h["t1"].detach(), h["i1"].detach()) + losses.discriminator_loss(
            disc, h["t2"].detach(), h["i2"].detach()
        )
        loss_disc.backward()
        self.opt_disc.step()

        # hashing networks
        self.opt_hash.zero_grad(set_to_none=True)
        outputs = [h[v] for v in VIEWS]
        loss_c = losses.contrastive_loss(h["i1"], h["i2"], h["t1"], h["t2"], cfg.contrastive_weights, cfg.tau)
        fakes = (h["t1"], h["t2"]) if cfg.original_quirks else (h["i1"], h["i2"])  # QUIRK: original used t1, t2
        loss_adv = losses.adversarial_generator_loss(disc, fakes)
        loss_q = losses.quantization_loss(self.B[idx], outputs)
        loss_bb = losses.bit_balance_loss(outputs)
        loss = loss_c + cfg.alpha * loss_adv + cfg.beta * loss_q + cfg.gamma * loss_bb
        loss.backward()
        self._reduce_gradients()
        self.opt_hash.step()
        terms = (loss, loss_c, loss_adv, loss_q, loss_bb, loss_disc)
        return {name: term.detach() for name, term in zip(LOSS_TERMS, terms)}

    def _update_codes(self) -> None:
        """B = sign(((Hi1 + Hi2)/2 + (Ht1 + Ht2)/2)/2) from this epoch's outputs."""
        b = self.buffers
        self.B = torch.sign(((b["i1"] + b["i2"]) / 2 + (b["t1"] + b["t2"]) / 2) / 2)

    # ---- validation --------------------------------------------------------------------------------
    # ---- state -------------------------------------------------------------------------------------
    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_hash": self.opt_hash, "opt_disc": self.opt_disc}  # opt_hash's learning rate is logged

    def model_payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "bit": self.cfg.bit,
            "image_dim": self.model.image_net.net[0].in_features,
            "caption_dim": self.model.text_net.net[0].in_features,
            "epoch": self.epoch + 1,  # epochs are 1-based wherever a user reads them: this one is the last finished
            "epoch_numbering": 1,
        }

    def extra_state(self) -> dict:
        return {"B": self.B, "buffers": dict(self.buffers)}

    def load_extra_state(self, payload: dict) -> None:
        self.B = payload["B"].to(self.device)
        self.buffers = {v: payload["buffers"][v].to(self.device) for v in VIEWS}


def check_finite_loss(epoch: int, sums: dict) -> None:
    """A loss term that turned nan or inf stops the run, naming the epoch and the term."""
    import math

    for term, value in (sums or {}).items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise DUCHError(
                f"epoch {epoch + 1}: the {term} loss is {value}; training stopped (the saved checkpoints are of the "
                f"epochs before). Lower the learning rate or loss weights, or raise --tau"
            )


def run_epochs(trainer: DUCHTrainer, on_epoch_end) -> None:
    """Train from the epoch after the last finished one; ``on_epoch_end(epoch, record)`` saves state.

    ``epoch`` counts from 0 (the original's schedule tests it); ``record["epoch"]`` is 1-based, as users read it.
    """
    cfg = trainer.cfg
    epochs = range(trainer.epoch + 1, cfg.epochs)
    bar = tqdm(epochs, desc="train", unit="epoch", initial=trainer.epoch + 1, total=cfg.epochs, dynamic_ncols=True,
               disable=not trainer.show_progress)
    for epoch in bar:
        start, lr = time.perf_counter(), trainer.lr
        sums = trainer.train_epoch(epoch)
        check_finite_loss(epoch, sums)  # before validation and before anything is saved: checkpoints stay finite
        record = {"epoch": epoch + 1, "lr": lr, "loss": sums, "time_s": round(time.perf_counter() - start, 4)}
        if trainer.is_validation_epoch(epoch):
            record["valid"] = trainer.validate()
        bar.set_postfix(loss=f"{sums['total']:.4g}")
        on_epoch_end(epoch, record)
    bar.close()
