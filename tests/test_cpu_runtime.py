"""CPU runtime: heap reuse around network calls, bf16 detection and the CPU default precision."""
from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest
import torch

import ivfusion
from ivfusion import _cpu, _heap
from ivfusion.models import get_model_info

glibc = pytest.mark.skipif(not _heap.heap_reuse_supported(), reason="needs glibc")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mmapped_bytes() -> int:
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc < 2.33 has no mallinfo2")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


def _larger_than_any_free_chunk() -> int:
    """Bytes above glibc's largest mmap threshold (32 MiB) and above every free chunk of the heap, so that
    malloc can serve them neither from a chunk earlier tests left free nor without growing something."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return 64 * 2**20 + libc.mallinfo2().fordblks


@glibc
def test_heap_reuse_keeps_large_blocks_off_mmap_and_release_restores():
    _heap.release_heap()
    before = _mmapped_bytes()
    size = _larger_than_any_free_chunk()
    big = torch.empty(size, dtype=torch.uint8)
    outside = _mmapped_bytes() - before
    del big
    assert outside >= size
    with _heap.heap_reuse():
        with _heap.heap_reuse():  # nested: one count
            before = _mmapped_bytes()
            big = torch.empty(_larger_than_any_free_chunk(), dtype=torch.uint8)
            assert _mmapped_bytes() - before < 64 * 2**20  # served from the heap
            del big
        assert _heap._active
    assert _heap._active and _heap._timer is not None  # cached until idle
    _heap.release_heap()
    assert not _heap._active and _heap._timer is None
    before = _mmapped_bytes()
    size = _larger_than_any_free_chunk()
    big = torch.empty(size, dtype=torch.uint8)
    assert _mmapped_bytes() - before >= size  # glibc's behaviour is back
    del big


@glibc
def test_heap_is_released_after_the_idle_delay(monkeypatch):
    _heap.release_heap()
    monkeypatch.setattr(_heap, "RELEASE_AFTER_S", 0.05)
    with _heap.heap_reuse():
        pass
    timer = _heap._timer
    timer.join(5)
    assert not _heap._active and _heap._timer is None


def test_heap_reuse_can_be_turned_off(monkeypatch):
    _heap.release_heap()
    monkeypatch.setenv("IVFUSION_HEAP_REUSE", "0")
    assert not _heap.heap_reuse_supported()
    with _heap.heap_reuse():
        assert not _heap._active


def test_cpu_flags_and_native_bf16(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert _cpu.cpu_flags.__wrapped__(str(info)) == frozenset({"fpu", "sse2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("IVFUSION_CPU_BF16", raising=False)
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw"}))
    assert not _cpu.native_bf16()  # AVX-512 without BF16: emulated, no faster
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert _cpu.native_bf16()
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"asimd", "bf16"}))
    assert _cpu.native_bf16()
    monkeypatch.setenv("IVFUSION_CPU_BF16", "0")
    assert not _cpu.native_bf16()


def _pair(h=48, w=64):
    g = np.random.default_rng(0)
    return g.integers(0, 256, (h, w), dtype=np.uint8), g.integers(0, 256, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("name", ivfusion.list_models())
def test_cpu_default_precision_follows_registration_and_cpu(name, monkeypatch):
    ir, vis = _pair()
    fp32 = ivfusion.fuse(ir, vis, method=name, device="cpu", precision="fp32")
    bf16 = ivfusion.fuse(ir, vis, method=name, device="cpu", precision="bf16")
    monkeypatch.setenv("IVFUSION_CPU_BF16", "0")
    assert np.array_equal(ivfusion.fuse(ir, vis, method=name, device="cpu"), fp32)
    monkeypatch.setenv("IVFUSION_CPU_BF16", "1")
    expected = bf16 if get_model_info(name).cpu_bf16 else fp32
    assert np.array_equal(ivfusion.fuse(ir, vis, method=name, device="cpu"), expected)
