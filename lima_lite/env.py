"""`lima-lite env`: what to paste into a bug report, and what lima_lite will do on this machine.

    $ lima-lite env            # versions, CPU, GPUs, the precision and fast paths lima_lite will use
    $ lima-lite env --json     # the same, as one JSON object

Like `transformers env` and `accelerate env`, plus what follows for lima_lite: the precision it trains and
answers in (lima_lite.precision), and which of its fast paths run here, or why not.
"""

import argparse
import importlib.util
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from lima_lite.files import print_json
from lima_lite.machine import Machine, detect_machine
from lima_lite.precision import choose_precision

PACKAGES = ("lima-lite", "torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets",
            "gradio", "liger-kernel", "flash-attn")


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """{package: installed version, or None when it is not installed}."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def cuda_devices() -> list[dict]:
    """Each CUDA device: name, memory, compute capability, bf16 support."""
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "compute_capability": f"{props.major}.{props.minor}",
                        # bf16 needs Ampere (8.0) or newer; torch.cuda.is_bf16_supported asks the current device
                        "bf16": props.major >= 8})
    return devices


def fast_paths(machine: Machine) -> dict[str, dict]:
    """lima_lite's fast paths on this machine (lima_lite.resolve decides with the same facts): used or not, and why."""
    def path(used: bool, why: str) -> dict:
        return {"used": used, "why": why}

    cuda = machine.cuda
    liger = importlib.util.find_spec("liger_kernel") is not None
    flash = machine.flash_attn or importlib.util.find_spec("flash_attn") is not None
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    return {
        "fused_loss": path(cuda and liger, "Liger's fused linear cross-entropy" if cuda and liger else
                           "no CUDA" if not cuda else "liger-kernel is not installed (pip install liger-kernel)"),
        "chunked_loss": path(not (cuda and liger), "lima_lite's chunked cross-entropy (no full logits)"),
        "flash_attention_varlen": path(cuda and flash, "flash-attention 2 over padding-free batches" if cuda and flash
                                       else "no CUDA" if not cuda else "flash-attn is not installed"),
        "sdpa_varlen": path(not (cuda and flash), "sdpa once per example of a padding-free batch"),
        "qlora_4bit": path(bnb, ("bitsandbytes 4-bit NF4 on " + ("CUDA" if cuda else "the CPU (slower than on a GPU; "
                                 "chat and the app load full precision here)")) if bnb else "bitsandbytes is not installed"),
    }


def environment() -> dict:
    import torch

    machine = detect_machine()
    precision = choose_precision(machine.hardware)
    devices = cuda_devices()
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "cpu": {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                "bf16_native": precision.hardware.bf16 if precision.hardware.device == "cpu" else None},
        "cuda": {"available": bool(devices), "torch_cuda": torch.version.cuda, "devices": devices},
        "precision": {"device": precision.hardware.device, "dtype": precision.dtype, "autocast": precision.autocast,
                      "line": precision.line("training and replies")},
        "fast_paths": fast_paths(machine),
    }


def render(env: dict) -> str:
    lines = [f"lima_lite environment ({env['platform']}, Python {env['python']})", "", "packages:"]
    lines += [f"  {name:<14} {found or '-'}" for name, found in env["packages"].items()]
    cpu = env["cpu"]
    bf16 = {True: "native bf16", False: "no native bf16 (emulated: slow)", None: "not used (GPU)"}[cpu["bf16_native"]]
    lines += ["", f"CPU: capability {cpu['capability']}, {cpu['threads']} threads, {bf16}"]
    if env["cuda"]["devices"]:
        lines.append(f"CUDA {env['cuda']['torch_cuda']}:")
        lines += [f"  cuda:{d['index']} {d['name']}, {d['memory_gib']} GiB, compute {d['compute_capability']}, "
                  f"{'bf16' if d['bf16'] else 'no bf16'}" for d in env["cuda"]["devices"]]
    else:
        lines.append("CUDA: no GPU"
                     + (f" (torch built for CUDA {env['cuda']['torch_cuda']})" if env["cuda"]["torch_cuda"] else ""))
    lines += ["", f"precision: {env['precision']['line']}", "fast paths:"]
    lines += [f"  {name:<22} {'yes' if p['used'] else 'no '}  {p['why']}" for name, p in env["fast_paths"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lima-lite env", description=__doc__.split("\n\n")[0] + "\n\n" +
                                     __doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the text")
    args = parser.parse_args(argv)
    env = environment()
    print_json(env, indent=2) if args.json else print(render(env))
    return 0


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.env:main", sys.argv[1:]))
