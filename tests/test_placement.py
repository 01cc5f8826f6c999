"""Memory placement: huge pages, NUMA policy, prefaulting."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import tlalloc
from tlalloc import _tlalloc

MPOL_BIND, MPOL_INTERLEAVE = 2, 3


def thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            text = fh.read()
    except OSError:
        return "missing"
    return text.split("[", 1)[1].split("]", 1)[0]


def smaps_field(base: int, field: str) -> int:
    """kB of `field` in the mapping that contains address `base`."""
    inside = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                inside = lo <= base < hi
            elif inside and parts[0] == field + ":":
                return int(parts[1])
    raise AssertionError(f"no mapping contains {base:#x}")


@pytest.mark.skipif(thp_mode() not in ("madvise", "always"), reason="kernel has THP disabled")
def test_thp_region_is_backed_by_huge_pages():
    a = tlalloc.Arena("8MiB", huge_pages="thp")
    assert a.stats()["page_kind"] == "thp"
    base, size = _tlalloc._region_address(a)
    assert base % (2 << 20) == 0  # aligned so that huge pages can back it
    x = a.zeros(6 << 20, np.uint8)
    x[::4096] = 1
    assert smaps_field(base, "AnonHugePages") >= 2048
    del x


def test_default_pages_are_not_huge_in_madvise_mode():
    if thp_mode() != "madvise":
        pytest.skip("only meaningful when THP is in madvise mode")
    a = tlalloc.Arena("8MiB")
    assert a.stats()["page_kind"] == "default"
    base, _ = _tlalloc._region_address(a)
    x = a.zeros(6 << 20, np.uint8)
    assert smaps_field(base, "AnonHugePages") == 0
    del x


def hugetlb_pool_pages() -> int:
    try:
        with open("/proc/sys/vm/nr_hugepages") as fh:
            return int(fh.read())
    except OSError:
        return 0


@pytest.mark.skipif(hugetlb_pool_pages() > 0, reason="a huge-page pool is configured here")
def test_hugetlb_without_pool_falls_back_and_reports(python_subprocess):
    r = python_subprocess(
        "import warnings, tlalloc\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    a = tlalloc.Arena('4MiB')\n"
        "    b = tlalloc.Arena('4MiB')\n"
        "s = a.stats()\n"
        "print(s['page_kind_requested'], s['page_kind'], len(w))\n"
        "print(w[0].message if w else '')\n",
        {"TLALLOC_HUGE_PAGES": "hugetlb"},
    )
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()[:2]
    requested, got, nwarn = first.split()
    assert requested == "hugetlb" and got in ("thp", "default") and nwarn == "1"
    assert "huge-page pool" in second


def test_numa_local_policy_reads_back():
    a = tlalloc.Arena("4MiB", numa="local")
    s = a.stats()
    mode, node = _tlalloc._region_policy(a)
    if s["numa_policy"] == "off":
        pytest.skip("the kernel refused mbind here (reported as 'off')")
    assert mode == MPOL_BIND
    assert node == s["numa_node"]
    assert _tlalloc._numa_nodes() >= 1


def test_numa_interleave_policy_reads_back():
    a = tlalloc.Arena("4MiB", numa="interleave")
    if a.stats()["numa_policy"] == "off":
        pytest.skip("the kernel refused mbind here (reported as 'off')")
    mode, _ = _tlalloc._region_policy(a)
    assert mode == MPOL_INTERLEAVE


def test_numa_off_leaves_default_policy():
    a = tlalloc.Arena("4MiB")
    assert a.stats()["numa_policy"] == "off"
    mode, _ = _tlalloc._region_policy(a)
    assert mode in (0, -1)  # MPOL_DEFAULT, or the call is unavailable


def resident_pages(base: int, size: int) -> int:
    """Pages of [base, base+size) resident in memory (mincore), independent of how
    the kernel merged neighbouring mappings."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    page = os.sysconf("SC_PAGE_SIZE")
    vec = (ctypes.c_ubyte * (size // page))()
    rc = libc.mincore(ctypes.c_void_p(base), ctypes.c_size_t(size), vec)
    assert rc == 0, os.strerror(ctypes.get_errno())
    return sum(v & 1 for v in vec)


def test_prefault_makes_region_resident():
    a = tlalloc.Arena("8MiB", prefault=True)
    assert a.stats()["prefaulted"] is True
    base, size = _tlalloc._region_address(a)
    assert resident_pages(base, size) == size // os.sysconf("SC_PAGE_SIZE")
    b = tlalloc.Arena("8MiB")
    base_b, size_b = _tlalloc._region_address(b)
    assert b.stats()["prefaulted"] is False
    assert resident_pages(base_b, size_b) == 0


def test_settings_from_environment_reach_thread_arenas(python_subprocess):
    r = python_subprocess(
        "import tlalloc\n"
        "s = tlalloc.thread_arena().stats()\n"
        "print(s['page_kind'], s['prefaulted'], s['numa_policy'] in ('local', 'off'))\n",
        {"TLALLOC_HUGE_PAGES": "thp", "TLALLOC_PREFAULT": "1", "TLALLOC_NUMA": "local"},
    )
    assert r.returncode == 0, r.stderr
    page_kind, prefaulted, numa_ok = r.stdout.split()
    assert prefaulted == "True" and numa_ok == "True"
    assert page_kind == ("thp" if thp_mode() in ("madvise", "always") else page_kind)


def test_configure_placement():
    old = tlalloc.get_config()
    try:
        cfg = tlalloc.configure(huge_pages="thp", numa="interleave", prefault=True)
        assert (cfg.huge_pages, cfg.numa, cfg.prefault) == ("thp", "interleave", True)
        a = tlalloc.Arena("4MiB")
        s = a.stats()
        assert s["page_kind_requested"] == "thp" and s["prefaulted"] is True
    finally:
        tlalloc.configure(**old.as_dict())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"huge_pages": "always"}, ValueError, "huge_pages must be one of 'off', 'thp', 'hugetlb'"),
        ({"numa": "remote"}, ValueError, "numa must be one of 'off', 'local', 'interleave'"),
        ({"prefault": "yes"}, TypeError, "prefault must be True or False"),
    ],
)
def test_bad_placement_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tlalloc.Arena("64KiB", **kwargs)
    with pytest.raises((ValueError, TypeError)):
        tlalloc.configure(**kwargs)


def test_no_warning_without_hugetlb():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tlalloc.Arena("4MiB", huge_pages="thp")
    assert os.path.exists("/proc/self/smaps")
