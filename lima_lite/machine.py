"""The machine a run starts on, measured once: what lima_lite.resolve decides from.

    >>> machine = detect_machine()          # hardware (lima_lite.precision), CUDA, processes, flash-attn
    >>> with_free_memory(machine).gpu_free_gib

Every machine-dependent choice (precision, fast paths, auto_fit's budget, accumulation per process) reads these
values, never the machine itself, so the same recipe on the same machine resolves to the same settings.
"""

import importlib.util
import os
from dataclasses import dataclass, replace

from lima_lite import precision
from lima_lite.memory.estimate import GIB


@dataclass(frozen=True)
class Machine:
    """What resolve needs to know of the machine a run starts on, measured once by `detect_machine`."""

    hardware: precision.Hardware
    cuda: bool
    processes: int = 1  # data-parallel processes (torchrun and accelerate set WORLD_SIZE)
    flash_attn: bool = False  # flash-attention installed, with CUDA to run it
    gpu_free_gib: float | None = None  # free memory of the GPU now (auto_fit's budget)
    host_gib: float | None = None  # system memory available now (auto_fit's budget without a GPU; offloading's room)


def detect_machine() -> Machine:
    """This machine, without its free memory (`with_free_memory` measures it, for auto_fit)."""
    import torch

    cuda = torch.cuda.is_available()
    return Machine(hardware=precision.detect_hardware(), cuda=cuda, processes=int(os.environ.get("WORLD_SIZE", "1")),
                   flash_attn=cuda and importlib.util.find_spec("flash_attn") is not None)


def with_free_memory(machine: Machine) -> Machine:
    """`machine` with the GPU's free memory and the system memory available now: auto_fit's budget."""
    import torch

    return replace(machine, gpu_free_gib=torch.cuda.mem_get_info()[0] / GIB if machine.cuda else None,
                   host_gib=available_host_gib())


def available_host_gib() -> float:
    """System memory available now: where offloaded checkpoints go (pinned)."""
    import psutil

    return psutil.virtual_memory().available / GIB
