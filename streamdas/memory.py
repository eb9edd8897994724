"""Memory of an object graph holding torch tensors and NumPy views of them.

River's ``_raw_memory_usage`` walks the object graph with :func:`gc.get_referents` and adds the
``nbytes`` of NumPy arrays; it does not see tensor storage (a tensor's ``sys.getsizeof`` is its
Python header), it misses gradients and counts an array twice when a view and its base are both
reachable. :func:`deep_size` walks the same graph but counts every byte of *buffer* memory once:
the storage of each tensor (and its ``.grad``) and the data of each array, merged as address
intervals, so the NumPy views of the CPU fast path (which share the tensors' storage) add
nothing.

Examples
--------
>>> import numpy as np, torch
>>> t = torch.zeros(1000)                  # 4,000 bytes of storage
>>> view = t.numpy()[:500]                 # shares it
>>> deep_size([t, view]) - deep_size([torch.zeros(0), np.zeros(0)]) >= 4000
True
>>> deep_size([t, view]) < deep_size([t, t.clone()])
True
"""

from __future__ import annotations

import gc
import sys
import types
from typing import Any

import numpy as np
import torch

__all__ = ["deep_size"]

_SKIP = (type, types.ModuleType, types.FunctionType)


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, -1
    for lo, hi in sorted(intervals):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


def deep_size(root: Any) -> int:
    """Bytes held by ``root`` and everything it references (Python objects, tensor storage,
    array data), each buffer counted once.

    Parameters
    ----------
    root
        Any object (an estimator, a trainer, a list of tensors...).

    Returns
    -------
    int
    """
    seen: set[int] = set()
    buffers: list[tuple[int, int]] = []
    size = 0
    pending: list[Any] = [root]
    while pending:
        walk: list[Any] = []
        for obj in pending:
            if isinstance(obj, _SKIP) or id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, torch.Tensor):
                size += sys.getsizeof(obj)
                storage = obj.untyped_storage()
                if storage.nbytes():
                    buffers.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
                if obj.grad is not None:
                    walk.append(obj.grad)
            elif isinstance(obj, np.ndarray):
                size += sys.getsizeof(obj) - (obj.nbytes if obj.flags.owndata else 0)
                if obj.nbytes:
                    start = obj.__array_interface__["data"][0]
                    buffers.append((start, start + obj.nbytes))
            else:
                size += sys.getsizeof(obj)
            walk.append(obj)
        pending = gc.get_referents(*walk)
    return size + _union_length(buffers)
