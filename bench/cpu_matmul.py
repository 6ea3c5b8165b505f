"""bf16 against float32 matmul speed on this CPU, one thread: does torch compute bf16 natively here?

    $ python bench/cpu_matmul.py
    $ ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/cpu_matmul.py   # as a CPU without AVX-512

The shape is a quick-start MLP matmul (512 tokens x 576 -> 1,536). lima_lite.precision decides with a
smaller timed matmul of the same kind.
"""

import time

import torch

from lima_lite.precision import cpu_bf16_native

torch.set_num_threads(1)
print(f"capability {torch.backends.cpu.get_cpu_capability()}, cpuid avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, "
      f"lima_lite.precision: native bf16 {cpu_bf16_native()}")
for dtype in (torch.float32, torch.bfloat16):
    a, b = torch.randn(512, 576).to(dtype), torch.randn(576, 1536).to(dtype)
    a @ b
    repeats = 5
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    seconds = (time.perf_counter() - start) / repeats
    print(f"{str(dtype):>15}: {2 * 512 * 576 * 1536 / seconds / 1e9:6.1f} GFLOP/s")
