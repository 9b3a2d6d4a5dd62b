"""ONNX export and the onnxruntime backend (extra ``ivfusion[onnx]``).

Every network is exported once per test session with its shipped weights and once with random
weights, at the dynamic-shape example size (2 x 1 x 100 x 140), and run by ONNX Runtime at other
sizes and batch sizes against the PyTorch forward pass.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ivfusion
from ivfusion.cli import main
from ivfusion.fusion import _luma_and_chroma
from ivfusion.io import read_image, to_chw_tensor, to_unit_range
from ivfusion.pretrained import default_weight, get_weight_info
from ivfusion.models import blocks, create_model, create_random_model, list_models
from ivfusion.tiling import pad_to_multiple

from .conftest import VAL_DIR, require

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ivfusion.deploy import (  # noqa: E402
    OnnxFusion,
    cached_onnx_export,
    export_onnx,
    load_onnx,
    read_onnx_info,
)

NETWORKS = list_models()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """``{(method, "shipped" | "random"): path}``, exported lazily and kept for the module."""
    root = tmp_path_factory.mktemp("onnx")
    cache: dict = {}

    def get(method: str, kind: str) -> Path:
        if (method, kind) not in cache:
            weights = "random" if kind == "random" else None
            cache[method, kind] = export_onnx(method, root / f"{method}-{kind}.onnx", weights=weights)
        return cache[method, kind]

    return get


def _session(path: Path) -> OnnxFusion:
    return OnnxFusion(path, ["CPUExecutionProvider"], threads=2)


def _val_lumas(n: int, max_side: int) -> list:
    """The first ``n`` validation pairs as ``(ir, vis_y)`` ``(1, 1, H, W)`` tensors, shrunk to ``max_side``."""
    d = require(VAL_DIR)
    out = []
    for ir_path in sorted((d / "ir").iterdir())[:n]:
        lumas = []
        for path in (ir_path, d / "vi" / ir_path.name):
            t, kind = to_chw_tensor(path)
            y = _luma_and_chroma(to_unit_range(t, kind, name="image"))[0][None]
            scale = max_side / max(y.shape[-2:])
            size = (round(y.shape[-2] * scale), round(y.shape[-1] * scale))
            lumas.append(F.interpolate(y, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1))
        out.append(tuple(lumas))
    return out


# ------------------------------------------------------------------------ exportable code paths


@pytest.mark.parametrize("n_in,n_out", [(24, 6), (26, 7), (13, 7), (7, 7), (5, 7), (100, 1), (1, 3)])
def test_adaptive_pool_matrix_matches_torch(n_in, n_out):
    x = torch.rand(2, 3, n_in, n_in + 3, dtype=torch.float64)
    ph = blocks.adaptive_pool_matrix(n_in, n_out, dtype=torch.float64)
    pw = blocks.adaptive_pool_matrix(n_in + 3, n_out, dtype=torch.float64)
    ours = ph @ x @ pw.T
    ref = F.adaptive_avg_pool2d(x, (n_out, n_out))
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    assert torch.allclose(ph.sum(dim=1), torch.ones(n_out, dtype=torch.float64))  # each bin is an average


def test_exporting_code_paths_equal_eager(monkeypatch):
    x = torch.rand(1, 4, 26, 37)
    eager_pool = blocks.adaptive_avg_pool2d(x, (7, 10))
    eager_pad, hw = pad_to_multiple(x, 8)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(blocks.adaptive_avg_pool2d(x, (7, 10)), eager_pool, rtol=0, atol=1e-6)
    padded, hw2 = pad_to_multiple(x, 8)
    assert hw2 == hw and torch.equal(padded, eager_pad)
    y = torch.rand(1, 4, 24, 32)  # already a multiple: the export path still pads, by zero rows
    assert torch.equal(pad_to_multiple(y, 8)[0], y)


# ------------------------------------------------------------------------ export and parity


@pytest.mark.slow
@pytest.mark.parametrize("method", NETWORKS)
def test_export_matches_pytorch_on_validation_pairs(exported, method):
    path = exported(method, "shipped")
    onnx.checker.check_model(str(path), full_check=True)
    info = read_onnx_info(path)
    manifest = get_weight_info(info.weights)
    assert info.method == method and info.dynamic and info.opset == 18
    assert info.weights == default_weight(method)
    assert info.weights_sha256 == manifest.sha256
    assert info.ivfusion_version == ivfusion.__version__ and info.torch_version == torch.__version__
    session = _session(path)
    model = create_model(method, pretrained=True)
    for ir, vis in _val_lumas(3, max_side=224):  # 224 x ~150: not the export size (100 x 140)
        with torch.inference_mode():
            ref = model(ir, vis)
        out = session(ir, vis)
        assert out.shape == ref.shape == ir.shape
        assert float((out - ref).abs().max()) < 1e-4, method


@pytest.mark.slow
@pytest.mark.parametrize("method", NETWORKS)
def test_random_weights_export_runs_at_other_sizes(exported, method):
    path = exported(method, "random")
    info = read_onnx_info(path)
    assert info.weights == "random" and info.weights_sha256 == ""
    session = _session(path)
    model = create_random_model(method)
    gen = torch.Generator().manual_seed(3)
    for shape in [(1, 1, 77, 93), (3, 1, 64, 160)]:
        ir, vis = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
        with torch.inference_mode():
            ref = model(ir, vis)
        out = session(ir, vis)
        assert out.shape == shape
        assert float((out - ref).abs().max()) < 1e-4, (method, shape)


def test_static_export_and_its_size_check(tmp_path):
    path = export_onnx("didfuse", tmp_path / "static.onnx", weights="random", dynamic=False, static_size=(48, 64),
                       rule="average")
    info = read_onnx_info(path)
    assert not info.dynamic and info.options == {"rule": "average"}
    session = _session(path)
    assert session.static_shape == (1, 1, 48, 64)
    ir, vis = torch.rand(1, 1, 48, 64), torch.rand(1, 1, 48, 64)
    with torch.inference_mode():
        ref = create_random_model("didfuse")(ir, vis, rule="average")
    assert float((session(ir, vis) - ref).abs().max()) < 1e-4
    with pytest.raises(ValueError, match=r"static graph for inputs \(1, 1, 48, 64\)"):
        session(torch.rand(1, 1, 50, 64), torch.rand(1, 1, 50, 64))


# ------------------------------------------------------------------------ fuse(backend="onnxruntime")


@pytest.mark.slow
def test_fuse_backend_matches_torch_colour_pair(exported, val_pair):
    ir, vis = val_pair
    path = exported("didfuse", "shipped")
    ours = ivfusion.fuse(ir, vis, "didfuse", backend="onnxruntime", weights=path)
    ref = ivfusion.fuse(ir, vis, "didfuse", device="cpu", precision="fp32")
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8 and ours.ndim == 3
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    tiled = ivfusion.fuse(ir, vis, "didfuse", backend="onnxruntime", weights=path, tile_size=128)
    tiled_ref = ivfusion.fuse(ir, vis, "didfuse", device="cpu", precision="fp32", tile_size=128)
    assert np.abs(tiled.astype(int) - tiled_ref.astype(int)).max() <= 1


@pytest.mark.filterwarnings("ignore:didfuse. running with random")
def test_backend_exports_into_the_cache_once(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("IVFUSION_CACHE_DIR", str(tmp_path / "cache"))
    ir = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    vis = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    with pytest.warns(UserWarning, match="random"):
        out = ivfusion.fuse(ir, vis, "didfuse", backend="onnxruntime", weights="random", rule="average")
    cached = list((tmp_path / "cache" / "onnx").glob("didfuse-*.onnx"))
    assert len(cached) == 1 and read_onnx_info(cached[0]).options == {"rule": "average"}
    mtime = cached[0].stat().st_mtime_ns
    assert cached_onnx_export("didfuse", "random", rule="average") == cached[0]
    assert cached[0].stat().st_mtime_ns == mtime
    ref = ivfusion.fuse(ir, vis, "didfuse", weights="random", device="cpu", rule="average")
    assert out.shape == (40, 56) and np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_backend_errors(exported, tmp_path):
    ir = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="backend must be one of 'torch', 'onnxruntime'"):
        ivfusion.fuse(ir, ir, "guided", backend="tensorrt")
    with pytest.raises(ValueError, match="'laplacian' is a classical method"):
        ivfusion.fuse(ir, ir, "laplacian", backend="onnxruntime")
    with pytest.raises(ValueError, match="precision: the onnxruntime backend runs the exported float32 graph"):
        ivfusion.fuse(ir, ir, "didfuse", backend="onnxruntime", precision="bf16")
    path = exported("didfuse", "random")
    with pytest.raises(ValueError, match="exported for method 'didfuse', not 'f3net'"):
        load_onnx("f3net", path)
    with pytest.raises(ValueError, match=r"exported with options \{'rule': 'sum'\}"):
        load_onnx("didfuse", path, options={"rule": "average"})
    with pytest.raises(ValueError, match="does not accept option"):
        load_onnx("didfuse", path, options={"levels": 3})
    stranger = tmp_path / "stranger.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(stranger))
    with pytest.raises(ValueError, match="has no ivfusion metadata"):
        load_onnx("didfuse", stranger)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        read_onnx_info(garbage)
    with pytest.raises(ValueError, match="device: the onnxruntime backend runs on 'cpu' or 'cuda'"):
        load_onnx("didfuse", path, device="mps")


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="'laplacian' is not a network"):
        export_onnx("laplacian", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset: expected an int >= 18"):
        export_onnx("didfuse", tmp_path / "x.onnx", opset=13)
    with pytest.raises(ValueError, match="ending in .onnx"):
        export_onnx("didfuse", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="static_size"):
        export_onnx("didfuse", tmp_path / "x.onnx", dynamic=False, static_size=(8, 640))
    with pytest.raises(ValueError, match="does not accept option"):
        export_onnx("f3net", tmp_path / "x.onnx", rule="sum")
    with pytest.raises(ValueError, match="rule must be one of"):
        export_onnx("didfuse", tmp_path / "x.onnx", weights="random", rule="max")
    assert not (tmp_path / "x.onnx").exists()
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx("didfuse", existing, weights="random")
    assert existing.read_bytes() == b"keep me"


@pytest.mark.filterwarnings("ignore:didfuse. running with random")
def test_missing_extra_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setenv("IVFUSION_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'ivfusion\[onnx\]'"):
        ivfusion.fuse(np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8), "didfuse",
                      backend="onnxruntime", weights="random")
    assert not any(tmp_path.rglob("*.onnx"))  # failed before exporting anything


# ------------------------------------------------------------------------ command line


@pytest.mark.slow
def test_cli_export_then_fuse(tmp_path, capsys, val_pair):
    ir, vis = val_pair
    model = tmp_path / "didfuse.onnx"
    assert main(["export", "onnx", "didfuse", "-o", str(model), "-O", "rule=average"]) == 0
    printed = capsys.readouterr().out
    assert "didfuse with didfuse.ivif" in printed and "'rule': 'average'" in printed and "dynamic" in printed
    assert main(["export", "onnx", "didfuse", "-o", str(model)]) == 1
    assert "exists" in capsys.readouterr().err
    out = tmp_path / "fused.png"
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "-m", "didfuse", "--backend", "onnxruntime",
                 "--weights", str(model), "-O", "rule=average"]) == 0
    fused = read_image(out)
    ref = ivfusion.fuse(ir, vis, "didfuse", device="cpu", precision="fp32", rule="average")
    assert fused.shape == ref.shape and np.abs(fused.astype(int) - ref.astype(int)).max() <= 1
    assert json.loads(json.dumps(read_onnx_info(model).options)) == {"rule": "average"}
