"""torch.distributed for scripts launched by ``torchrun``: one process per device, nothing else.

A script calls ``init_from_env(device)`` once: under torchrun (``WORLD_SIZE`` > 1 in the environment) it
joins the process group (nccl on CUDA, gloo on CPU) and returns the rank's ``Context``; a plain
``python script.py`` (or a one-process torchrun) gets a one-process context and no process group, so it
behaves exactly as without this module. Rows are shared out as contiguous shards (``shard_bounds``), the
order a one-process run uses, so gathering the shards in rank order gives back the one-process order.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from utils.errors import DUCHError
from utils.runtime import resolve_device

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``, the ``backend`` (None: no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, logs and validates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def record(self) -> dict:
        """What config.json and provenance record about the launch."""
        return {"world_size": self.world_size, "backend": self.backend}


_CONTEXT = Context()
_ONE_PROCESS = False  # inside ``one_process()``


def context() -> Context:
    """The context ``init_from_env`` made (one process until then)."""
    return _CONTEXT


@contextlib.contextmanager
def one_process():
    """Work that one rank does alone (rank 0 making the demo features by calling images_augment.main) runs
    inside as a plain one-process job: scripts called here neither join nor leave the process group."""
    global _CONTEXT, _ONE_PROCESS
    saved = _CONTEXT, _ONE_PROCESS
    _CONTEXT, _ONE_PROCESS = Context(device=_CONTEXT.device), True
    try:
        yield
    finally:
        _CONTEXT, _ONE_PROCESS = saved


def torchrun_world_size() -> int:
    """WORLD_SIZE that torchrun set, 1 outside torchrun (and inside ``one_process``)."""
    if _ONE_PROCESS:
        return 1
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DUCHError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number (it is set by torchrun)") from None


def init_from_env(device_name: str = "auto") -> Context:
    """Join torchrun's process group, or return the one-process context.

    ``device_name`` as --device: ``auto``/``cuda``/``cuda:N`` give each rank ``cuda:LOCAL_RANK`` (one GPU per
    process: the index of a typed ``cuda:N`` cannot hold for every rank), ``cpu`` gives the CPU.
    """
    global _CONTEXT
    world_size = torchrun_world_size()
    device = resolve_device(device_name)
    if world_size <= 1:
        _CONTEXT = Context(device=device)
        return _CONTEXT
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise DUCHError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: launch several processes with "
                        "torchrun")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DUCHError(f"rank {rank} has LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} "
                            "GPUs: pass --nproc_per_node at most the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    _CONTEXT = Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=backend)
    return _CONTEXT


def finish() -> None:
    """The end of a run that succeeded: every rank waits for the others, then leaves the group. A rank that
    left while rank 0 still merged the shards once made rank 0 abort at its exit ("terminate called without
    an active exception", gloo). Not after an error, where the other ranks may never arrive: shutdown() alone."""
    barrier()
    shutdown()


def shutdown() -> None:
    """Leave the process group (a no-op for one process)."""
    global _CONTEXT
    if _ONE_PROCESS:
        return
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = Context(device=_CONTEXT.device)


def barrier() -> None:
    if context().world_size > 1:
        dist.barrier()


def sum_counters(counts):
    """A ``collections.Counter`` summed over ranks (every rank gets the total)."""
    from collections import Counter

    if context().world_size == 1:
        return counts
    gathered = [None] * context().world_size
    dist.all_gather_object(gathered, dict(counts))
    return sum((Counter(c) for c in gathered), Counter())


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows [start, stop) of rank ``rank``: contiguous shards, the first ``n % world_size`` one row longer."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_sizes(n: int, world_size: int) -> list[int]:
    return [b - a for a, b in (shard_bounds(n, world_size, r) for r in range(world_size))]


def gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every rank's rows, in rank order; this rank's slot is ``local`` itself, so gradients flow into it.

    The open_clip way of gathering features: the other ranks' rows are constants here, so a loss that every
    rank computes on the whole gathered batch gives each rank the exact gradient of its own rows, and summing
    the parameter gradients over ranks gives the one-process gradient. ``sizes`` (rows per rank) may differ
    by rank: shards are padded to the longest for the collective.
    """
    ctx = context()
    if ctx.world_size == 1:
        return local
    longest = max(sizes)
    padded = local.detach().new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    pieces = [piece[:size] for piece, size in zip(pieces, sizes)]
    pieces[ctx.rank] = local
    return torch.cat(pieces, dim=0)


def all_reduce_gradients(parameters) -> None:
    """Sum the gradients of ``parameters`` over ranks (one flat collective); a missing gradient counts as 0.

    A sum, not DDP's mean: each rank holds the gradient of the global loss through its own rows only.
    """
    if context().world_size == 1:
        return
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in parameters:
        p.grad.copy_(flat[offset: offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def broadcast_state(module: nn.Module, *tensors: torch.Tensor) -> None:
    """Rank 0's parameters, buffers and ``tensors`` on every rank (in place)."""
    if context().world_size == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers(), *tensors]:
            dist.broadcast(t.data, src=0)


def sync_device_rng(device: torch.device) -> None:
    """Rank 0's generator state on every rank's CUDA device (after a resume: the checkpoint holds rank 0's
    process's CUDA states, in which only its own device's generator has advanced). CPU generators are
    restored from the checkpoint alike on every rank."""
    if context().world_size == 1 or device.type != "cuda":
        return
    state = torch.cuda.get_rng_state(device).to(device)
    dist.broadcast(state, src=0)
    torch.cuda.set_rng_state(state.cpu(), device)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, with gradient: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, differentiable (torch.distributed.nn.functional.all_reduce is deprecated)."""
    return _AllReduceSum.apply(tensor) if context().world_size > 1 else tensor


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics are those of the global batch, on any device.

    torch.nn.SyncBatchNorm refuses CPU tensors (so gloo), hence this one: two differentiable all-reduces
    (``all_reduce_sum``), the sum then the centred sum of squares, so the statistics, the running
    averages and the gradients equal BatchNorm1d on the whole batch to float rounding. Its state dict is
    BatchNorm1d's: checkpoints load in a one-process model. Eval mode and one process: plain BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and context().world_size > 1):
            return super().forward(x)
        count = torch.tensor([float(x.shape[0])], dtype=x.dtype, device=x.device)
        summed = all_reduce_sum(torch.cat([x.sum(dim=0), count]))
        n = summed[-1].detach()
        if n < 2:
            raise ValueError(f"batch norm needs at least 2 rows in the global batch, got {int(n)}")
        mean = summed[:-1] / n
        centred = x - mean
        var = all_reduce_sum((centred * centred).sum(dim=0)) / n
        out = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1), alpha=momentum)
        return out

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm1d replaced, in place, by one of these sharing its parameters and
        buffers (as torch.nn.SyncBatchNorm.convert_sync_batchnorm does: optimisers need no rebuild)."""
        for name, child in module.named_children():
            if type(child) is nn.BatchNorm1d:
                sync = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                           device="meta")
                for key, value in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
                    setattr(sync, key, value)
                sync.train(child.training)
                setattr(module, name, sync)
            else:
                cls.convert(child)
        return module
