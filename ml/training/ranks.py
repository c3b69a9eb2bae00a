"""What the training loop needs to know about data-parallel ranks (train.devices > 1, started by
ml.training.distributed).

Outside a process group every helper is the single-process identity: rank 0 of 1, nothing to broadcast.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

T = TypeVar("T")


def active() -> bool:
    """Whether this process is one rank of a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 validates, saves checkpoints and logs; the others follow what it broadcasts."""
    return rank() == 0


def from_main(obj: T) -> T:
    """Rank 0's `obj` on every rank (any picklable value): decisions taken on one clock and one validation."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(total: float, count: int, device: torch.device) -> float:
    """The mean of a per-sample sum over every rank's samples (the epoch's training loss)."""
    if not active():
        return total / max(count, 1)
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0] / t[1].clamp(min=1))


def check_in_sync(model: torch.nn.Module, device: torch.device) -> None:
    """Every rank must end with rank 0's weights (DDP averages every step's gradients); a rank that trained on its
    own would ship nothing, so it fails the run instead of passing silently."""
    if not active():
        return
    with torch.no_grad():
        total = sum(p.double().sum() for p in model.parameters()).reshape(1).to(device)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"data-parallel ranks ended with different weights (sums {low.item()} .. {high.item()})")


def shard_sampler(ds: Dataset, seed: int) -> Sampler | None:
    """Each rank's share of a shuffled epoch (call set_epoch every epoch); None outside a process group."""
    if not active():
        return None
    return DistributedSampler(ds, num_replicas=world(), rank=rank(), shuffle=True, seed=seed)


def shard_size(n: int) -> int:
    """Samples one rank draws per epoch so that all ranks together draw about n."""
    return math.ceil(n / world())


def set_epoch(sampler: Any, epoch: int) -> None:
    """A DistributedSampler reshuffles only when told the epoch (also inside a BatchSampler); other samplers carry
    their own generator."""
    sampler = getattr(sampler, "sampler", sampler)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
