"""Bounded memory on the CPU: the available-memory reading, tiling from it, a clear MemoryError,
and a 3000x3000 F3Net fusion inside a 5 GB address-space limit (``ulimit -v 5000000``)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ivfusion
from ivfusion.models import get_model_info
from ivfusion import _memory, fusion

from .conftest import REPO_ROOT, smooth_image


def test_available_memory_is_the_smallest_limit(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    real = _memory._meminfo_kib
    monkeypatch.setattr(_memory, "_meminfo_kib",
                        lambda key, path="/proc/meminfo": real(key, str(meminfo) if path == "/proc/meminfo" else path))
    monkeypatch.setattr(_memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(_memory, "_address_space_headroom", lambda: None)
    assert _memory.available_cpu_bytes() == 4000000 * 1024
    monkeypatch.setattr(_memory, "_cgroup_headroom", lambda: 3 << 30)
    assert _memory.available_cpu_bytes() == 3 << 30
    monkeypatch.setattr(_memory, "_address_space_headroom", lambda: 1 << 30)
    assert _memory.available_cpu_bytes() == 1 << 30


def test_address_space_headroom_follows_ulimit():
    code = textwrap.dedent("""
        import resource
        from ivfusion import _memory
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))
        vm = _memory._meminfo_kib("VmSize", "/proc/self/status") * 1024
        head = _memory._address_space_headroom()
        assert abs(head - ((6 << 30) - vm)) < (64 << 20), (head, vm)
        assert _memory.available_cpu_bytes() <= head
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_cpu_tiles_only_when_one_pass_does_not_fit(monkeypatch, rng):
    calls = []
    real = fusion.tiled_apply
    monkeypatch.setattr(fusion, "tiled_apply", lambda *a, **k: calls.append(k["tile_size"]) or real(*a, **k))
    ir, vis = smooth_image(rng, 300, 280), smooth_image(rng, 300, 280)
    monkeypatch.setattr(fusion, "available_cpu_bytes", lambda: 20 << 30)
    whole = ivfusion.fuse(ir, vis, "f3net", device="cpu")
    assert calls == []
    # 300 * 280 px * 3250 B = 273 MB > 60 % of 280 MB: tiles of 256 (the smallest), 213 MB each
    assert get_model_info("f3net").cpu_bytes_per_pixel == 3250
    monkeypatch.setattr(fusion, "available_cpu_bytes", lambda: 280 << 20)
    tiled = ivfusion.fuse(ir, vis, "f3net", device="cpu")
    assert calls == [256]
    assert tiled.shape == whole.shape and np.abs(tiled.astype(int) - whole.astype(int)).mean() < 2.0


def test_memory_error_when_not_even_a_small_tile_fits(monkeypatch, rng):
    monkeypatch.setattr(fusion, "available_cpu_bytes", lambda: 100 << 20)
    ir = smooth_image(rng, 600, 600)
    with pytest.raises(MemoryError, match=r"didfuse: not enough memory to fuse a 600x600 image on the CPU.*256x256 tiles"):
        ivfusion.fuse(ir, ir, "didfuse", device="cpu")
    assert ivfusion.fuse(ir, ir, "guided", device="cpu").shape == (600, 600)  # classical: not a network


@pytest.mark.slow
def test_3000x3000_f3net_inside_a_5gb_address_space():
    code = textwrap.dedent("""
        import resource, numpy as np, torch
        resource.setrlimit(resource.RLIMIT_AS, (5000000 * 1024, resource.RLIM_INFINITY))  # ulimit -v 5000000
        import ivfusion
        torch.set_num_threads(2)
        g = np.random.default_rng(0)
        base = g.random((3000, 3000))
        ir = (base * 255).astype(np.uint8)
        vis = (np.clip(base + 0.1 * g.random((3000, 3000)), 0, 1) * 255).astype(np.uint8)
        out = ivfusion.fuse(ir, vis, "f3net", device="cpu")
        assert out.shape == (3000, 3000) and out.dtype == np.uint8
        assert 20 < out.mean() < 235 and np.corrcoef(out.ravel()[::97], ir.ravel()[::97])[0, 1] > 0.5
        print("ok", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]
