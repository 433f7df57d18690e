"""Files a kill cannot tear: written beside their place, then renamed over it."""
import contextlib
import os


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", opener=open, **kwargs):
    """Open ``path``.tmp for writing; when the block ends without an error, rename it to
    ``path``. A kill (or an error) at any moment leaves the previous ``path``, or none,
    never half of one."""
    tmp = path + ".tmp"
    with opener(tmp, mode, **kwargs) as f:
        yield f
    os.replace(tmp, path)
