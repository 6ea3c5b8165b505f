"""lima_lite.memory.host: with a fixed mmap threshold, freed tensors leave the resident size (glibc only)."""

import subprocess
import sys

import pytest

from lima_lite.memory.host import map_large_blocks

# In a fresh process: free one 16 MiB tensor (glibc then raises its mmap threshold to 16 MiB), then make
# twenty 8 MiB tensors, each followed by a small one that stays alive (so the heap cannot shrink from its
# top), free the large ones, and print how many MiB of their 160 stay resident.
SCRIPT = """
import sys, torch
from lima_lite.memory.host import map_large_blocks
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
if sys.argv[1] == "fixed":
    assert map_large_blocks()
torch.ones(4 << 20).sum()  # 16 MiB, freed
big, small = [], []
for _ in range(20):
    big.append(torch.ones(2 << 20))  # 8 MiB each, touched
    small.append(torch.ones(1000))
before = rss()
del big
print((rss() - (before - (160 << 20))) / 2**20)
"""


def resident_after_free(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not map_large_blocks(), reason="needs glibc (Linux)")
def test_fixed_threshold_gives_freed_tensors_back():
    default, fixed = resident_after_free("default"), resident_after_free("fixed")
    assert default > 150  # glibc's rising threshold: the freed 8 MiB blocks stay resident on the heap
    assert fixed < 10  # mapped blocks: unmapped when freed
