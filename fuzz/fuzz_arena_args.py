"""Fuzz target: the argument handling of the arena API.

Arena(...) with any arguments, then a sequence of empty / zeros / empty_like /
alloc / scope / reset calls with any arguments. Each call must succeed (and
give an array of the requested shape and dtype) or raise TypeError /
ValueError / OverflowError / MemoryError (ArenaOverflowError) / BufferError;
a crash, a sanitizer report or another exception is a finding.
"""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports():
    import numpy as np
    from _gen import DTYPES, array, number

    import tlalloc

OK = (TypeError, ValueError, OverflowError, MemoryError, BufferError)


def shape(fdp: atheris.FuzzedDataProvider) -> object:
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return number(fdp)
    if k == 1:
        return tuple(number(fdp) for _ in range(fdp.ConsumeIntInRange(0, 4)))
    if k == 2:
        return array(fdp, 4)
    return fdp.ConsumeIntInRange(0, 64)


def dtype(fdp: atheris.FuzzedDataProvider) -> object:
    return fdp.PickValueInList([*DTYPES, None, float, int, "f8", "bogus", 3, np.float32, "V0", "U2"])


def order(fdp: atheris.FuzzedDataProvider) -> object:
    return fdp.PickValueInList(["C", "F", "A", "K", "c", "f", "x", None, 1, b"C", ""])


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            kw = {}
            if fdp.ConsumeBool():
                kw["overflow"] = fdp.PickValueInList(["error", "fallback", "FALLBACK", 1, None])
            if fdp.ConsumeBool():
                kw["zero_on_reset"] = number(fdp)
            cap = fdp.PickValueInList([4096, 65536, 1 << 20, "64KiB", "1 MiB", 0, -1, 2**41, None, 1.5])
            a = tlalloc.Arena(cap, **kw)
        except OK:
            return
        keep = []
        scopes = []
        for _ in range(fdp.ConsumeIntInRange(1, 12)):
            op = fdp.ConsumeIntInRange(0, 7)
            try:
                if op in (0, 1):
                    s, d = shape(fdp), dtype(fdp)
                    x = (a.empty if op == 0 else a.zeros)(s, d, order(fdp))
                    want = np.empty(s, d)  # same rule as NumPy's: must accept it too
                    if x.shape != want.shape or x.dtype != want.dtype:
                        raise AssertionError(f"{s!r} {d!r}: {x.shape} {x.dtype}")
                elif op == 2:
                    x = a.empty_like(array(fdp, 8), dtype(fdp) if fdp.ConsumeBool() else None,
                                     order(fdp), shape(fdp) if fdp.ConsumeBool() else None)
                elif op == 3:
                    x = a.alloc(number(fdp), number(fdp)) if fdp.ConsumeBool() else a.alloc(number(fdp))
                elif op == 4:
                    sc = a.scope()
                    sc.__enter__()
                    scopes.append(sc)
                    continue
                elif op == 5 and scopes:
                    scopes.pop().__exit__(None, None, None)
                    continue
                elif op == 6:
                    keep.clear()
                    a.reset(force=fdp.ConsumeBool())
                    continue
                else:
                    continue
                if fdp.ConsumeBool():
                    keep.append(x)
            except OK:
                pass
        keep.clear()
        try:
            while scopes:
                scopes.pop().__exit__(None, None, None)
        except OK:
            pass
        a.reset(force=True)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
