"""Type stubs for the extension module tlalloc._tlalloc (the C core's binding)."""

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import DTypeLike, NDArray

# ---- arenas (arena_py.c) ---------------------------------------------------------

_Shape = SupportsIndex | Sequence[SupportsIndex]

class ArenaOverflowError(MemoryError): ...
class ArenaFallbackWarning(RuntimeWarning): ...

class Scope:
    def __enter__(self) -> Arena: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

class Arena:
    def __new__(
        cls,
        capacity: int | str | None = None,
        *,
        overflow: Literal["error", "fallback", "panic"] | None = None,
        zero_on_reset: bool | None = None,
        huge_pages: Literal["off", "thp", "hugetlb"] | None = None,
        numa: Literal["off", "local", "interleave"] | None = None,
        prefault: bool | None = None,
    ) -> Arena: ...
    def empty(
        self, shape: _Shape, dtype: DTypeLike = float, order: Literal["C", "F"] = "C"
    ) -> NDArray[Any]: ...
    def zeros(
        self, shape: _Shape, dtype: DTypeLike = float, order: Literal["C", "F"] = "C"
    ) -> NDArray[Any]: ...
    def empty_like(
        self,
        prototype: Any,
        dtype: DTypeLike | None = None,
        order: Literal["C", "F", "A", "K"] = "K",
        shape: _Shape | None = None,
    ) -> NDArray[Any]: ...
    def alloc(self, nbytes: SupportsIndex, align: SupportsIndex = 64) -> memoryview: ...
    def scope(self) -> Scope: ...
    def reset(self, *, force: bool = False) -> None: ...
    def _stats_dict(self) -> dict[str, Any]: ...
    @property
    def capacity(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def depth(self) -> int: ...
    @property
    def live_arrays(self) -> int: ...
    @property
    def overflow(self) -> str: ...
    @property
    def zero_on_reset(self) -> bool: ...
    @property
    def is_thread_arena(self) -> bool: ...
    @property
    def owner_thread(self) -> int: ...

def thread_arena() -> Arena: ...
def scratch() -> Scope: ...
def _registry_stats() -> dict[str, Any]: ...
def _registry_list() -> list[dict[str, Any]]: ...
def _set_defaults(
    capacity: int, overflow: int, zero_on_reset: int, pages: int, numa: int, prefault: int
) -> None: ...
def _set_hooks(subtype: type, parse_size: Any) -> None: ...
def _numa_nodes() -> int: ...
def _region_policy(arena: Arena) -> tuple[int, int]: ...
def _region_address(arena: Arena) -> tuple[int, int]: ...
def _bench_alloc(
    strategy: Literal["thread", "shared", "malloc"], threads: int, allocs_per_thread: int, size: int
) -> dict[str, float]: ...

# ---- Huffman coding (huffman_py.c) -----------------------------------------------

class HuffmanCorruptStreamError(ValueError): ...

def huffman_encode(
    data: Any,
    block_size: int = 1024,
    threads: int = 20,
    allocator: Literal["global-lock", "pooled", "tlalloc"] = "tlalloc",
    heap_bytes: int = 0,
    pool_bytes: int = 0,
) -> tuple[bytes, dict[str, int]]: ...
def huffman_decode(
    data: Any,
    threads: int = 20,
    allocator: Literal["global-lock", "pooled", "tlalloc"] = "tlalloc",
    heap_bytes: int = 0,
    pool_bytes: int = 0,
) -> bytes: ...

# ---- kernels (kernels_py.c; public wrappers in tlalloc/kernels.py) ---------------

_Scratch = Literal["thread", "shared", "malloc"] | None

def _cosine_similarity(
    query: Any, candidates: Any, top_k: int | None, out: NDArray[np.float32] | None, scratch: _Scratch, /
) -> NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]]: ...
def _spread_activation(
    indptr: Any,
    indices: Any,
    data: Any,
    seeds: Any,
    activation: Any,
    decay_rate: float,
    threshold: float,
    max_depth: int,
    top_k: int | None,
    scratch: _Scratch,
    engine: Literal["auto", "dense", "sparse"],
    /,
) -> NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]]: ...
def _decay(
    strengths: Any,
    ages: Any,
    model: str,
    tau: float,
    half_life: float | None,
    alpha: float,
    out: Any,
    scratch: _Scratch,
    /,
) -> NDArray[Any]: ...
def _kernels_isa() -> Literal["portable", "avx2", "avx512"]: ...
def _kernels_best_isa() -> Literal["portable", "avx2", "avx512"]: ...
def _kernels_set_isa(isa: Literal["portable", "avx2", "avx512"]) -> str: ...
def _shared_scratch_stats() -> dict[str, int]: ...
def _set_thread_scratch(name: Literal["thread", "shared", "malloc"]) -> str: ...
def _get_thread_scratch() -> Literal["thread", "shared", "malloc"]: ...
def _set_default_tau(tau: float) -> None: ...

_ = np  # numpy is used in annotations above
