"""Wrong-device tensors found on a CPU-only machine.

On a GPU, a tensor made without ``device=`` lands on the CPU while the rows live on the GPU:
mixing the two in one op fails there (index_put_ of a CPU tensor into a CUDA one, cat,
arithmetic with a non-scalar), and nothing on a CPU-only machine shows it.
``HostTensors`` tracks, on the CPU, which tensors a GPU run would have on the host: every
tensor a factory makes without a device (``torch.zeros(3)``, ``torch.tensor(x)``,
``torch.ones(.., device=None)``) and everything computed from such tensors alone; the code's
inputs and what follows from them are "on the device". An op that mixes the two fails,
naming the op; explicit moves (``.to(device)``, ``.cuda()``, ``copy_``) are what a GPU
allows, and their results are on the device. It is stricter than CUDA in one way: a 0-dim
host tensor in a device op (CUDA takes it as a scalar) is flagged too.

What it covers: every tensor the code under it makes, in the ops this machine's path runs
(one worker, or gloo). What it cannot see: a tensor sent to a wrong device explicitly
(``.cpu()``, ``device="cpu"``), code that runs only on CUDA (NCCL, streams), and the ops
of other threads."""
import contextlib
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

_MOVES = {"to", "cuda", "copy_"}


def _name(func):
    return getattr(func, "__name__", str(func))


class HostTensors(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self._host = {}  # id -> weak reference (a WeakSet would compare tensors with ==)

    def _is_host(self, t):
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def _add(self, t):
        self._host[id(t)] = weakref.ref(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        leaves = tree_leaves((args, kwargs))
        if name in ("__getitem__", "__setitem__"):  # index tensors may live on the host
            leaves = [args[0]] + (tree_leaves(args[2]) if name == "__setitem__" else [])
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        host = [t for t in tensors if self._is_host(t)]
        moved = name in _MOVES and (name != "to" or any(
            isinstance(a, (torch.device, str, torch.Tensor)) for a in list(args[1:]) + [kwargs.get("device")]))
        if host and len(host) < len(tensors) and not moved:
            raise AssertionError(
                f"{name} mixes a tensor made without a device (on the host on a GPU machine: "
                f"shape {tuple(host[0].shape)}) with tensors on the inputs' device")
        out = func(*args, **kwargs)
        if moved and isinstance(out, torch.Tensor):  # .to() returns its input when on the CPU
            self._host.pop(id(out), None)  # already: on a GPU it is the moved copy
        made_on_host = not tensors and kwargs.get("device") is None
        if (made_on_host or (host and len(host) == len(tensors))) and not moved:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self._add(t)
        return out


@contextlib.contextmanager
def wrong_default_device():
    """Fail on any op that would mix host and device tensors on a GPU machine."""
    with HostTensors():
        yield
