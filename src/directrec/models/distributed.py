"""PyTorch distributed, when a launcher (torchrun) started this process; a no-op otherwise.

We never write our own cluster engine: `torchrun --nproc_per_node N` (or its multi-node
rendezvous flags) sets RANK, WORLD_SIZE and LOCAL_RANK, and this module joins the process
group (gloo on CPU, nccl on CUDA) and offers the three collectives training needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, x: float) -> float:
        """Rank 0's `x` on every rank (validation metrics, stop decisions)."""
        if not self.active:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=_comm_device())
        dist.broadcast(t, 0)
        return float(t.item())

    def total(self, x: float) -> float:
        """The sum of `x` over all ranks."""
        if not self.active:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t)
        return float(t.item())

    def share(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's tensor on every rank (e.g. item codes every rank must train against)."""
        if not self.active:
            return t
        out = t.detach().to(_comm_device()).contiguous()
        dist.broadcast(out, 0)
        return out.to(t.device)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def current() -> Dist:
    """This process's place in a distributed run, joining the process group on first use;
    Dist() (one process) when no launcher set WORLD_SIZE."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size())


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
