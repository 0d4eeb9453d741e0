"""The DJSRH and JDSH training loops as the DUCH authors ran them, in the runner of main.py.

One (image, caption) pair per training image (the run's split and caption choice), shuffled each
epoch into batches of ``batch_size`` with the last incomplete batch dropped (their drop_last=True);
each batch: the method's similarity matrix S from the input features, the network outputs, the
method's loss, one SGD step of each network. alpha = sqrt(epoch + 1) is set at each epoch's start.
The trainer has DUCHTrainer's interface (run_epochs, validation, checkpoints, resume).
"""

from __future__ import annotations

import torch

from configs.train import TrainConfig
from models.methods import build_model
from utils.retrieval.evaluation import EvalSet
from utils.train import losses_djsrh, losses_jdsh
from utils.train.trainer_base import EpochTrainer

LOSSES = {"djsrh": losses_djsrh, "jdsh": losses_jdsh}


def full_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Batches of exactly ``batch_size`` (the remainder dropped); one batch of everything when fewer samples."""
    n = order.numel()
    if n < batch_size:
        return [order] if n > 1 else []
    return list(torch.split(order[: n - n % batch_size], batch_size))


class BaselineTrainer(EpochTrainer):
    """Networks, the two SGD optimisers and the epoch counter of a DJSRH or JDSH run."""

    def __init__(
        self, cfg: TrainConfig, train_views: dict[str, torch.Tensor], query: EvalSet, db: EvalSet, device, model=None
    ):
        """``model`` replaces the networks (tests pass tiny ones); it needs image_net, text_net, set_alpha, encode."""
        super().__init__(cfg, train_views, query, db, device)
        self.method = cfg.method
        self.params = dict(cfg.method_params)
        self.losses = LOSSES[cfg.method]
        if model is None:
            model = build_model(
                cfg.method, train_views["i1"].shape[1], train_views["t1"].shape[1], cfg.bit, self.params["hidden"]
            )
        self.model = model.to(device)
        p = self.params
        self.opt_img = torch.optim.SGD(
            self.model.image_net.parameters(), lr=p["lr_img"], momentum=p["momentum"], weight_decay=p["weight_decay"]
        )
        self.opt_txt = torch.optim.SGD(
            self.model.text_net.parameters(), lr=p["lr_txt"], momentum=p["momentum"], weight_decay=p["weight_decay"]
        )
        self.n_train = train_views["i1"].shape[0]

    @property
    def loss_terms(self) -> tuple[str, ...]:
        return self.losses.LOSS_TERMS

    def term_weights(self) -> dict[str, float]:
        return self.losses.term_weights(self.params)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.model.set_alpha(epoch)
        order = torch.randperm(self.n_train)  # on the CPU: the same order on every device
        sums = dict.fromkeys(self.loss_terms, 0.0)
        for idx in full_batches(order, self.cfg.batch_size):
            for term, value in self._train_step(idx.to(self.device)).items():
                sums[term] += value  # tensors on the device: read once per epoch, not once per batch
        self.epoch = epoch
        return {term: float(value) for term, value in sums.items()}

    def _train_step(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of both networks; the loss terms as detached 0-d tensors."""
        img, txt = self.views["i1"][idx], self.views["t1"][idx]
        self.opt_img.zero_grad(set_to_none=True)
        self.opt_txt.zero_grad(set_to_none=True)
        code_i, code_t = self.model.image_net(img), self.model.text_net(txt)
        terms = self.losses.batch_loss(code_i, code_t, img, txt, self.params)
        terms["total"].backward()
        self.opt_img.step()
        self.opt_txt.step()
        return {k: v.detach() for k, v in terms.items()}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_img": self.opt_img, "opt_txt": self.opt_txt}  # opt_img's learning rate is logged

    def model_payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "method": self.method,
            "bit": self.cfg.bit,
            "hidden": int(self.params["hidden"]),
            "image_dim": int(self.views["i1"].shape[1]),
            "caption_dim": int(self.views["t1"].shape[1]),
            "epoch": self.epoch + 1,
            "epoch_numbering": 1,
        }
