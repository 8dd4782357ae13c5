"""Peak live tensor memory on any device (CPU included), for the smoke harness and the memory model.

`torch.cuda.max_memory_allocated` only exists on CUDA. `LiveBytes` counts the storages that operators allocate while
it is active (a TorchDispatchMode) and frees them when their last tensor dies (weakref finaliser), so `peak` is the
high-water mark of memory allocated *during* the block, above what already existed (weights, inputs). It sees every
ATen op, so it also works on CPU; it does not see allocator rounding or fragmentation (CUDA's caching allocator adds
a few percent), nor workspaces that kernels allocate outside of tensors.
"""
from __future__ import annotations

import threading
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def _free(self, key: int, nbytes: int) -> None:
        with self._lock:
            self.live -= nbytes
            self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = st.data_ptr()
                if key == 0 or key in self._seen:
                    continue
                nbytes = st.nbytes()
                with self._lock:
                    self._seen.add(key)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key, nbytes)
        return out
