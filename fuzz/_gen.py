"""Shared by the argument fuzz targets: values of every kind an argument can take."""

from __future__ import annotations

from typing import Any

import numpy as np

DTYPES = ["float16", "float32", "float64", "longdouble", "int8", "uint8", "int16", "uint16",
          "int32", "uint32", "int64", "uint64", "bool", "complex64", ">f4", ">i8", "O", "S3"]
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e-38, 1e-30, 1e19, 3e38, 1e300, 5e-324, float("inf"),
           float("-inf"), float("nan"), 2.0**63, -(2.0**63), 2.0**64]


def number(fdp: Any) -> Any:
    k = fdp.ConsumeIntInRange(0, 9)
    if k == 0:
        return fdp.PickValueInList(SPECIAL)
    if k == 1:
        return fdp.ConsumeIntInRange(-(2**65), 2**65)
    if k == 2:
        return fdp.ConsumeRegularFloat()
    if k == 3:
        return fdp.PickValueInList([None, True, False, "1", b"x", [], (1,), {}, object()])
    if k == 4:
        return np.float32(fdp.ConsumeRegularFloat())
    if k == 5:
        return np.int64(fdp.ConsumeIntInRange(-(2**63), 2**63 - 1))
    if k == 6:
        return np.uint64(fdp.ConsumeIntInRange(0, 2**64 - 1))
    return fdp.ConsumeIntInRange(-3, 20)


def array(fdp: Any, max_elems: int = 64) -> Any:
    """An ndarray of any dtype, shape (up to 3-D), layout and values; or not an array."""
    k = fdp.ConsumeIntInRange(0, 11)
    if k == 0:
        return number(fdp)
    if k == 1:
        return [number(fdp) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    dtype = np.dtype(fdp.PickValueInList(DTYPES))
    ndim = fdp.ConsumeIntInRange(0, 3)
    shape = tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(ndim))
    n = int(np.prod(shape)) if shape else 1
    if n > max_elems:
        shape, n = (max_elems,), max_elems
    vals = [fdp.PickValueInList(SPECIAL) if fdp.ConsumeBool() else fdp.ConsumeRegularFloat()
            for _ in range(n)]
    with np.errstate(all="ignore"):
        try:
            a = np.array(vals, dtype=np.float64).astype(dtype).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            a = np.zeros(shape, dtype)
    layout = fdp.ConsumeIntInRange(0, 5)
    if layout == 1 and a.ndim:
        a = a[::-1]
    elif layout == 2 and a.ndim >= 2:
        a = a.T
    elif layout == 3 and a.ndim and a.shape[0] > 1:
        a = a[::2]
    elif layout == 4:
        a = np.lib.stride_tricks.as_strided(a, shape=a.shape, strides=(0,) * a.ndim)
    elif layout == 5 and a.size:  # misaligned copy
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
        b = raw.view(a.dtype) if a.dtype.itemsize and not a.dtype.hasobject else a
        if b is not a:
            b[...] = a.reshape(-1)
            a = b.reshape(a.shape)
    if fdp.ConsumeBool():
        a.flags.writeable = False
    return a
