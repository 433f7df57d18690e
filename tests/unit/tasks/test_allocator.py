"""--malloc-keep-mb: glibc keeps freed 48 MB blocks for the next allocations (no page is
faulted in again), where its own dynamic thresholds (at most 32 MB) give them back to the
kernel every time, and it does not trim the 144 MB freed at once from its heap's top; each
in a fresh interpreter, as the setting holds for the process."""
import platform
import resource
import statistics
import subprocess
import sys

import pytest

from fairseq_gradvac.tasks import allocator
from tests.helpers import ROOT

# mallocs, writes and frees three 48 MB blocks 6 times (the C library's own malloc, as torch's
# CPU allocator calls it); prints the minor page faults of each of the last 5
FAULTS = """
import ctypes, resource, sys
from fairseq_gradvac.tasks import allocator
print(allocator.keep_freed_memory(int(sys.argv[1])), file=sys.stderr)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def touch():  # every page written; 144 MB freed at once, at the heap's top
    blocks = [libc.malloc(48 << 20) for _ in range(3)]
    for b in blocks:
        ctypes.memset(b, 1, 48 << 20)
    for b in reversed(blocks):
        libc.free(b)
touch()
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

def _faults(megabytes):
    """The median of the page faults of one touch(), and what keep_freed_memory said."""
    proc = subprocess.run([sys.executable, "-c", FAULTS, str(megabytes)], capture_output=True, text=True,
                          cwd=ROOT, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return statistics.median(int(x) for x in proc.stdout.split()), proc.stderr


def _huge_pages_always():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
@pytest.mark.skipif(_huge_pages_always(), reason="transparent huge pages: a fault maps 2 MB, the count says little")
def test_kept_memory_is_not_faulted_in_again():
    pages = 3 * (48 << 20) // resource.getpagesize()  # 36,864 pages of 4 KiB per touch()
    kept, said = _faults(64)  # (trimmed at 64 MB instead of never: 24,544)
    if "refused" in said:
        pytest.skip(said)  # an older glibc caps the mmap threshold at 32 MB
    returned, said_0 = _faults(0)
    assert "keeps freed blocks up to 64 MB" in said and "glibc's own thresholds" in said_0
    assert returned >= 0.9 * pages  # mapped afresh each time
    assert kept < 0.05 * returned  # kept: neither unmapped (above 32 MB) nor trimmed (144 MB at the top)


@pytest.mark.parametrize("megabytes", [-1, 2048])
def test_out_of_range_is_refused_naming_the_option(megabytes):
    with pytest.raises(ValueError, match=rf"--malloc-keep-mb must be between 0 .* and 2047, got {megabytes}"):
        allocator.keep_freed_memory(megabytes)
