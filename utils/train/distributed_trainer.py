"""DUCH training on several processes (torchrun): one model, the global batch shared out across ranks.

What each rank does, and why the update is the one-process update for the same global batch:
- every rank draws the same epoch order (same seed, same RNG calls) and so the same global batches; it
  runs the hashing nets on its contiguous shard of each batch, with ``SyncBatchNorm1d`` so batch norm sees
  the global batch;
- the hash outputs are gathered (``gather_rows``: this rank's slot keeps its gradient), so every rank
  holds the whole batch's outputs: the NT-Xent negatives, bit balance and quantisation terms are the global
  batch's, and the output buffers, hence B, are filled for every row on every rank (no epoch-end gather);
- the discriminator is tiny (B -> 2B -> 1): every rank runs it on the whole gathered batch, so its batch
  norm is the global batch's, its gradient-penalty randoms are the one-process draw (same generator state,
  global shape), and its gradients and step are the same on every rank without a collective;
- every rank computes the global (summed) hashing loss but holds its gradient through its own rows only,
  so the hashing nets' gradients are summed over ranks (not averaged as DDP would) before the step.
The discriminator copies stay equal only while the ranks compute alike (the same kernels on the same
hardware: so on CPU; untested on GPUs here). Equal to one process up to float rounding (the order of sums
in the all-reduces and the batch-norm statistics); tests/test_distributed.py checks losses and codes to 1e-4.
"""
from __future__ import annotations

import torch

from utils.distributed import (
    SyncBatchNorm1d,
    all_reduce_gradients,
    broadcast_state,
    context,
    gather_rows,
    shard_bounds,
    shard_sizes,
    sync_device_rng,
)
from utils.train.trainer import DUCHTrainer


class DistributedDUCHTrainer(DUCHTrainer):
    """DUCHTrainer for one rank of a torchrun job (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dist = context()
        self.show_progress = self.dist.is_main
        SyncBatchNorm1d.convert(self.model.image_net)
        SyncBatchNorm1d.convert(self.model.text_net)
        broadcast_state(self.model, self.B)  # every rank starts from rank 0's model and codes
        sync_device_rng(self.device)

    def load_state(self, payload: dict) -> None:
        super().load_state(payload)
        sync_device_rng(self.device)

    def _hash_outputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        world, rank = self.dist.world_size, self.dist.rank
        start, stop = shard_bounds(idx.numel(), world, rank)
        sizes = shard_sizes(idx.numel(), world)
        local = super()._hash_outputs(idx[start:stop])
        return {view: gather_rows(h, sizes) for view, h in local.items()}

    def _reduce_gradients(self) -> None:
        all_reduce_gradients(self.model.hashing_parameters())

    def is_validation_epoch(self, epoch: int) -> bool:
        return self.dist.is_main and super().is_validation_epoch(epoch)
