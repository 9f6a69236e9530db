"""keep_freed_memory: with it, a loop that allocates and frees the same large arrays stops
paying page faults for them (measured in a child process, whose allocator it changes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import minigraph.memory as memory

CHILD = """
import resource, sys
import numpy
if sys.argv[1] == "keep":
    import minigraph.memory
    assert minigraph.memory.keep_freed_memory()
def step():  # a step's worth of fresh (N, p) arrays, each freed at the end
    a = numpy.ones((2048, 512), numpy.float32)
    b = a * 2.0
    c = b + a
    return float(c[0, 0])
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_freed_arrays_are_reused_instead_of_mapped_and_zeroed_again():
    plain, kept = faults_per_step("plain"), faults_per_step("keep")
    # Three 4 MiB arrays a step, up to 3 · 1024 pages mapped afresh without it (glibc 2.36 here:
    # about 1500), none with it.
    if plain < 100:
        pytest.skip(f"this allocator already reuses freed arrays ({plain} page faults a step)")
    assert kept < 0.05 * plain, (kept, plain)


def test_the_limit_is_checked():
    with pytest.raises(ValueError, match=r"keep_freed_memory: got limit_bytes=-1; expected an integer \[0, "):
        memory.keep_freed_memory(-1)
    with pytest.raises(ValueError, match=r"keep_freed_memory: got limit_bytes=1.5"):
        memory.keep_freed_memory(1.5)
