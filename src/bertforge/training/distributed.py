"""Where training runs: the device named by the user, the torchrun process group, and seeding."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from bertforge.errors import ConfigError


def resolve_device(name: str | int | torch.device, local_rank: int = 0, argument: str | None = None) -> torch.device:
    """`cpu`, `cuda` (this process's GPU under torchrun) or `cuda:N`; a clear error otherwise, naming
    `argument` (default: `--device NAME`)."""
    argument = argument or f"--device {name}"
    try:  # a number is a GPU's, as in transformers (torch.device(0) asks for the machine's accelerator)
        device = torch.device(f"cuda:{name}" if isinstance(name, int) and not isinstance(name, bool) else name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{argument}: not a torch device (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{argument}: bertforge runs on cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{argument}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def configure_torch(threads: int | None, deterministic: bool = False) -> int:
    """Set torch's CPU threads (None: torch's choice) and, if asked, deterministic algorithms only
    (identical runs on a GPU too, at some cost; an operation without one then fails loudly).
    Returns the thread count in use, which run cards record: results are bit-identical only
    for the same count."""
    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
    return torch.get_num_threads()


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a process on its own."""
    return int(os.environ.get("RANK", "0")) == 0


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators (all devices) from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Processes:
    """This process's place in a data-parallel run (rank 0 of 1 without torchrun) and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: str) -> "Processes":
        """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK. The backend follows the device the user asked
        for, not the hardware present: NCCL only for CUDA devices, gloo for `--device cpu`."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        target = resolve_device(device, local_rank)
        if world_size == 1:
            return cls(target)
        owns_group = not dist.is_initialized()
        if owns_group:
            dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
        return cls(target, dist.get_rank(), world_size, local_rank, owns_group)

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(values)
        return values

    def gather(self, value) -> list:
        """`value` of every process, in rank order (JSON-like values only)."""
        if self.world_size == 1:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def finish(self) -> None:
        """The end of a run that succeeded: every process gets here, then the group it created is destroyed.
        Left to the interpreter's exit, gloo's worker threads can outlive it and abort the process (SIGABRT,
        "terminate called without an active exception"), failing a run whose work was all done. Only on
        success: after an error, peers may still wait in a collective."""
        self.barrier()
        if self.owns_group:
            dist.destroy_process_group()
