"""The precision this machine computes fast, chosen once and said in one line.

    >>> choice = chosen_precision()
    >>> choice.dtype, choice.autocast       # ("float32", None) on a CPU without native bf16
    >>> print(choice.line("training"))      # "CPU without native bf16 (AVX2): training in float32"

Why: bfloat16 is only fast where the hardware computes it. A CPU with AVX-512-BF16 or AMX runs bf16
matmuls ~2.5x faster than float32; one with AVX2 only (most desktops and laptops) emulates them, ~30-45x
slower (docs/benchmarks.md). Turing and Pascal GPUs (RTX 20xx, Titan RTX, Quadro RTX, Tesla P40) have
no bf16 at all: there QLoRA computes in float16 with loss scaling, as the QLoRA notebooks for T4s do.

A recipe or command line that sets `dtype`, `bf16` or `fp16` wins; `precision_warning` says so in one
line when that choice is slow on this machine.
"""

import functools
import time
from dataclasses import dataclass

# The recipe keys this module chooses when the recipe leaves them out.
PRECISION_KEYS = ("dtype", "bf16", "fp16")


@dataclass(frozen=True)
class Hardware:
    """Where a model runs and whether it computes bf16 natively."""

    device: str  # "cpu" or "cuda"
    name: str  # "AVX2", "AVX512" (the CPU capability torch dispatches to), or the GPU's name
    bf16: bool  # bf16 matmuls at least as fast as float32 ones

    @property
    def label(self) -> str:
        if self.device == "cpu":
            return f"CPU {'with' if self.bf16 else 'without'} native bf16 ({self.name})"
        return f"GPU {self.name} ({'bf16' if self.bf16 else 'no bf16: fp16 compute'})"


@dataclass(frozen=True)
class Precision:
    """dtype: weights and 4-bit compute; autocast: the Trainer's mixed precision ("bf16", "fp16" or None)."""

    dtype: str
    autocast: str | None
    hardware: Hardware

    def line(self, what: str) -> str:
        mixed = {"bf16": ", bf16 autocast", "fp16": ", fp16 autocast with loss scaling"}.get(self.autocast, "")
        return f"{self.hardware.label}: {what} in {self.dtype}{mixed}"


def choose_precision(hardware: Hardware) -> Precision:
    """bf16 where the hardware computes it; else float16 on a GPU (4-bit compute, loss scaling) and float32
    on a CPU (float16 matmuls are emulated there too)."""
    if hardware.bf16:
        return Precision("bfloat16", "bf16", hardware)
    if hardware.device == "cuda":
        return Precision("float16", "fp16", hardware)
    return Precision("float32", None, hardware)


def _matmul_seconds(size: int = 256, rounds: int = 10) -> tuple[float, float]:
    """Best time of a size^3 matmul in (float32, bfloat16), measured in alternation so that a busy machine
    slows both alike."""
    import torch

    pairs = {dtype: (torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype))
             for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    # One thread: a parallel matmul waits for its slowest thread, so on a busy machine every call of it
    # takes as long as a descheduled thread's wait; a single thread's best of ten is its compute time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):  # kernel selection, allocation
            for a, b in pairs.values():
                a @ b
        for _ in range(rounds):
            for dtype, (a, b) in pairs.items():
                start = time.perf_counter()
                a @ b
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32], best[torch.bfloat16]


@functools.cache
def matmul_flops(dtype: str) -> float:
    """FLOP/s of one CPU thread on a 256^3 matmul in `dtype` ("float32" or "bfloat16"; float16 counts as
    float32, its math being emulated on a CPU): what the Train tab's time estimate scales from."""
    fp32, bf16 = _matmul_seconds()
    return 2 * 256**3 / (bf16 if dtype == "bfloat16" else fp32)


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether torch on this CPU runs bf16 matmuls natively, from a timed matmul (a few ms).

    Timing what torch will actually run honours ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA (which limit the
    kernels torch dispatches to) and works on any CPU family; torch's own flags only read the CPU's cpuid.
    Native bf16 takes ~0.4x float32's time, emulated 30-45x: the threshold, 3x, sits far from both, so a
    busy machine does not tip it.
    """
    fp32, bf16 = _matmul_seconds()
    return bf16 <= 3 * fp32


def cpu_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


@functools.cache
def detect_hardware() -> Hardware:
    """The first CUDA device if there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        # including_emulation=False: Turing "supports" bf16 by emulating it, which is what we must avoid
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return Hardware("cuda", f"{torch.cuda.get_device_name(0)}, sm {major}.{minor}", native)
    return Hardware("cpu", cpu_capability(), cpu_bf16_native())


def chosen_precision() -> Precision:
    return choose_precision(detect_hardware())


def recipe_precision(explicit: set[str], hardware: Hardware | None = None) -> dict[str, str]:
    """Raw recipe values for the precision keys the recipe and command line left out.

    Autocast follows the dtype: a recipe that sets only `dtype: float32` trains in float32, not in float32
    weights under bf16 autocast; one that sets only `bf16`/`fp16` keeps the chosen dtype.
    """
    choice = choose_precision(hardware) if hardware is not None else chosen_precision()
    values = {}
    if "dtype" not in explicit:
        values["dtype"] = choice.dtype
    if not {"bf16", "fp16"} & explicit:
        autocast = choice.autocast if "dtype" not in explicit else None
        values["bf16"] = str(autocast == "bf16").lower()
        values["fp16"] = str(autocast == "fp16").lower()
    return values


def machine_values(explicit: set[str], hardware: Hardware, cuda: bool) -> dict[str, str]:
    """Raw recipe values this machine decides when the recipe and command line leave them out: the precision
    keys (recipe_precision) and, without a GPU, `use_cpu`, so bf16 autocast runs on the CPU instead of failing
    TrainingArguments' validation. Read when the recipe is built: TRL's SFTConfig fixes its device and mixed
    precision then."""
    values = recipe_precision(explicit, hardware)
    if "use_cpu" not in explicit and not cuda:
        values["use_cpu"] = "true"
    return values


def precision_warning(dtype: str | None, bf16: bool, fp16: bool, hardware: Hardware | None = None) -> str | None:
    """One line when a precision the user set is slow (or fails) on this hardware, else None."""
    hardware = hardware or detect_hardware()
    if hardware.bf16:
        return None
    if dtype == "bfloat16" or bf16:
        cost = ("bf16 math is emulated there, 30-45x slower than float32" if hardware.device == "cpu"
                else "this GPU has no bf16: it fails or crawls")
        return (f"warning: bf16 was set explicitly (dtype/bf16) on a {hardware.label}; {cost}. Leave dtype, bf16 "
                f"and fp16 out of the recipe to get {choose_precision(hardware).dtype}")
    if hardware.device == "cpu" and (dtype == "float16" or fp16):
        return "warning: float16 was set explicitly (dtype/fp16) on a CPU: its math is emulated there; float32 is faster"
    return None


def precision_report(dtype: str, bf16: bool, fp16: bool, what: str) -> str:
    """The line a command prints before it loads a model: what runs in which precision on this hardware,
    and a warning on a second line when an explicit setting is slow here."""
    hardware = detect_hardware()
    autocast = "bf16" if bf16 else "fp16" if fp16 else None
    line = Precision(dtype, autocast, hardware).line(what)
    warning = precision_warning(dtype, bf16, fp16, hardware)
    return f"{line}\n{warning}" if warning else line
