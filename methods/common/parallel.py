"""Data-parallel training over processes started by ``torchrun`` (one process per device).

    torchrun --nproc_per_node=2 -m benchmark run --method ganseg --protocol synthetic_parts ...

What a data-parallel run is here (the loops' part is small: draw the global batch, keep the
rank's slice with ``world().local(...)``, step with ``precision.Updater``):

- **Same samples as one process.** Every rank draws the *global* batch from the same
  ``torch.Generator`` streams (seeded identically on all ranks) and keeps its contiguous slice
  ``[rank * b/W, (rank + 1) * b/W)``; the per-rank batch is the global batch / world size. So the
  union of the ranks' batches is exactly the batch one process would use, the streams' states are
  the same on every rank (rank 0's snapshot is everyone's), and a run can be resumed with another
  world size.
- **Per-rank global RNG.** The global torch RNG (anything a module draws without a generator) is
  seeded per rank (``rank_seed``); snapshots keep every rank's state.
- **Gradients averaged explicitly.** After ``backward`` the gradients of an optimiser's parameters
  are averaged over the ranks in one flattened ``all_reduce`` (``average_gradients``), before the
  optimiser steps: DistributedDataParallel's algorithm without its wrapper (as StyleGAN2-ADA's
  training loop does it). The wrapper does not fit these loops: its reducer does not support the
  double backward of the gradient penalty (``autograd.grad(create_graph=True)``), and the GAN
  steps switch the other network's ``requires_grad`` off, which the reducer treats as unused
  parameters. The cost: communication does not overlap the backward pass.
- **Identical start.** A loop's modules are broadcast from rank 0 when its snapshot is resumed or
  started (``Snapshot.resume``), as DDP's constructor does.
- **Synchronised BatchNorm** where the official code synchronises it (``SyncBatchNorm2d``:
  statistics over the global batch, with gradients through the reduction; one implementation
  for gloo and NCCL).
- **Only rank 0 writes.** The other ranks get a ``FitContext`` without a run folder.

Backends: NCCL for CUDA devices (device ``cuda:<LOCAL_RANK>``), gloo on the CPU.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from segbench.benchmark.errors import UserError

# Seeds of the per-rank global RNG: rank r uses seed + RANK_SEED_STRIDE * r (rank 0: the seed).
RANK_SEED_STRIDE = 1_000_003
# How long a rank waits for the others at a collective before giving up.
COLLECTIVE_TIMEOUT_MIN = 30


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def local_size(self, global_batch: int, what: str = "batch_size") -> int:
        """The per-rank batch: the global batch / world size (it must divide)."""
        if global_batch % self.size:
            raise UserError(f"{what}={global_batch} does not split over {self.size} processes; use a multiple "
                            f"of {self.size}")
        return global_batch // self.size

    def local(self, *batches: torch.Tensor) -> Any:
        """This rank's contiguous slice (along dim 0) of each global batch; one tensor for one."""
        out = []
        for batch in batches:
            n = self.local_size(batch.shape[0])
            out.append(batch[self.rank * n:(self.rank + 1) * n])
        return out[0] if len(out) == 1 else tuple(out)

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.size, "backend": self.backend}


def world() -> World:
    """The current process group as a ``World`` (rank 0 of 1 when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)), backend=str(dist.get_backend()))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), NCCL on CUDA, gloo on the
    CPU; returns this rank's device (``cuda:<LOCAL_RANK>`` for a CUDA device). Without torchrun
    this does nothing and returns ``device``."""
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA device(s) on this "
                            "machine; lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=COLLECTIVE_TIMEOUT_MIN))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int | None = None) -> int:
    return seed + RANK_SEED_STRIDE * (world().rank if rank is None else rank)


def _device_for_collectives() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world().backend == "nccl" else torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled; tensors come back on the CPU)."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_device_for_collectives())
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world().size == 1:
        return [obj]
    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Replace the gradient of each of ``optimizer``'s parameters by its mean over the ranks (one
    flattened all_reduce; nothing in one process). Parameters without a gradient are skipped;
    every rank runs the same code, so the sets agree."""
    if world().size == 1:
        return
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world().size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_modules(modules: Sequence[nn.Module], src: int = 0) -> None:
    """Make every rank's parameters and buffers rank ``src``'s (as DDP's constructor)."""
    if world().size == 1:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            with torch.no_grad():
                dist.broadcast(tensor.data, src=src)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a sum over ranks is the sum over ranks
    of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks (autograd-aware; the tensor itself on one rank)."""
    return _AllReduceSum.apply(tensor) if world().size > 1 else tensor


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: per-channel sums and
    squared deviations are all-reduced over the ranks (autograd-aware, so the backward pass sees
    the other ranks' contributions as torch's SyncBatchNorm does). Outside a multi-process
    training step it is plain BatchNorm2d. Works on gloo (CPU), where torch's does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world().size > 1):
            return super().forward(x)
        dims, dtype = (0, 2, 3), x.dtype
        x = x.float()  # statistics in fp32, also under autocast
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = all_reduce_sum(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce_sum(centred.pow(2).sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = count.detach()
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), momentum)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by ``SyncBatchNorm2d`` (same parameters and
    buffers, so state dicts are unchanged); nothing changes in a single process."""
    if world().size == 1:
        return module
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.to(next(iter(child.state_dict().values()), torch.empty(0)).device)
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
