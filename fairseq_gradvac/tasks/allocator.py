"""Keep the memory an update frees in the process for the next update (glibc's malloc).

A CPU update allocates the same large tensors every time: the logits of a 4,000-token batch
with an 8k vocabulary are 124 MB, their log-probabilities and gradients as much. glibc gives
blocks above its mmap threshold (at most 32 MB when it adjusts it itself) to the kernel on
free() and maps them afresh on the next malloc(), and trims the top of its heap once more
than twice that threshold is free there; every such page is faulted in again, zeroed by the
kernel, on its next use. With --direction-batching single the heap is trimmed more often
than in stock fairseq (the gradients live in the task's persistent row buffer, not in fresh
.grad tensors that keep the heap's top in use), so the kernel's share of an update rose to
up to 48% in some updates where stock's stayed at 2-25% (docs/performance.md). Fixed thresholds
keep freed blocks up to --malloc-keep-mb on the heap and the heap untrimmed: the process
holds the peak of its heap (what every update reaches again) for its life, as PyTorch's CUDA
caching allocator does on a GPU. It acts on glibc's malloc only: with another allocator
preloaded (LD_PRELOAD of jemalloc, tcmalloc) it changes nothing that allocator does, and a
glibc that refuses a threshold this large (the mallopt(3) of older releases caps it at 32 MB)
keeps its own, as logged.
"""
import ctypes
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
DEFAULT_MB = 1024  # --malloc-keep-mb's default: the logits of transformer base at 4,096 tokens are 512 MB
LIMIT_MB = 2047  # mallopt takes an int


def check(megabytes: int) -> None:
    if not 0 <= megabytes <= LIMIT_MB:
        raise ValueError(f"--malloc-keep-mb must be between 0 (glibc's own thresholds) and {LIMIT_MB}, "
                         f"got {megabytes}")


def keep_freed_memory(megabytes: int) -> str:
    """Set glibc's mmap threshold to ``megabytes`` and turn its trimming off for this process
    (0: leave glibc's dynamic thresholds). Returns what was done, for the log; another C library is left as
    it is (said so)."""
    check(megabytes)
    if megabytes == 0:
        return "malloc: glibc's own thresholds (--malloc-keep-mb 0)"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
    except (OSError, AttributeError, TypeError):  # macOS, musl: no gnu_get_libc_version; Windows: no CDLL(None)
        return "malloc: not glibc, left as it is (--malloc-keep-mb applies to glibc only)"
    version = libc.gnu_get_libc_version().decode()
    # blocks below the mmap threshold come from the heap; a trim threshold of -1 never gives
    # the heap's top back (mallopt(3)): a bounded one is passed as soon as an update frees
    # more than it at the top, and everything above is faulted in again
    if not (libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(megabytes << 20)) and libc.mallopt(M_TRIM_THRESHOLD, -1)):
        return (f"malloc: glibc {version} refused thresholds of {megabytes} MB; its own apply (freed "
                f"blocks above them go back to the kernel and are faulted in again)")
    return (f"malloc: glibc {version} keeps freed blocks up to {megabytes} MB for the next update "
            f"(--malloc-keep-mb; 0: glibc's own thresholds)")
