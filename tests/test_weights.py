"""Tests of ivfusion.pretrained (and the builder and checkpoint export that use it): manifest validation, resolution order, the Hub route (against a
stand-in server on 127.0.0.1), integrity errors, strict loading, export and the CLI."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ivfusion
from ivfusion import cli
from ivfusion import pretrained as W
from ivfusion.models import load_weights, weight_config
from ivfusion.train.export import export_checkpoint
from ivfusion.models import _registry
from ivfusion.models import create_model
from ivfusion.models._registry import FusionNet, register_model
from ivfusion.pretrained import hub as pretrained_hub
from ivfusion.pretrained import io as pretrained_io
from ivfusion.pretrained.schema import _dump_manifest

try:  # tests/ is a package in this repository; also work if it is collected as plain files
    from .hub_server import StandInHub
except ImportError:
    from hub_server import StandInHub

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT.parent / "shared" / "reference"
REPO_ID = "ivfusion-test/tinynet"
REVISION = "v0.0.1"


# ----------------------------------------------------------------------------- fixtures


class TinyNet(FusionNet):
    """Smallest network with weights, biases, and BatchNorm buffers (incl. an int64 one)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 1, 1)

    def fuse_aligned(self, ir: torch.Tensor, vis_y: torch.Tensor, **options: Any) -> torch.Tensor:
        return torch.sigmoid(self.conv2(torch.relu(self.bn(self.conv1(torch.cat([ir, vis_y], 1))))))


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> type:
    """Register ``tinynet`` in a private copy of the registry (restored afterwards)."""
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    register_model("tinynet", paper="test", size_multiple=2, default_config={"width": 4})(TinyNet)
    return TinyNet


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Path]:
    """Isolated weight locations: empty bundled dir, temporary HF_HOME, no real Hub."""
    for var in ("IVFUSION_WEIGHTS_DIR", "IVFUSION_MANIFEST", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port: never the real Hub
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(pretrained_hub, "BUNDLED_DIR", bundled)
    pretrained_io._DIGESTS.clear()
    return {"root": tmp_path, "bundled": bundled, "cache": tmp_path / "hf" / "hub"}


def random_state(width: int = 4, seed: int = 0) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = TinyNet(width)
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in net.state_dict().items()}


def entry_for(path: Path, *, method: str = "tinynet", default: bool = True, **over: Any) -> Dict[str, Any]:
    data = path.read_bytes()
    entry = {
        "method": method,
        "repo_id": REPO_ID,
        "filename": path.name,
        "revision": REVISION,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "license": "Apache-2.0",
        "default": default,
        "training_data": [{"folder": "ivif/train/tno", "pairs": 82, "terms": "CC BY 4.0"}],
        "recipe": {"epochs": 2, "crop": 64, "batch": 4, "lr": 1e-3, "hardware": "CPU, 1 s"},
        "metrics": {"ivif/val/roadscene": {"SSIM": 0.5}},
        "reproduce": "ivfusion train tinynet",
    }
    entry.update(over)
    return entry


def make_weight(directory: Path, name: str = "tinynet.test", seed: int = 0,
                metadata: Optional[Dict[str, str]] = None) -> tuple:
    """Write a weight file for ``name``; returns (path, state_dict, manifest dict)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = random_state(seed=seed)
    path = directory / f"{name}.safetensors"
    save_file(state, str(path), metadata=metadata or {"method": name.split(".")[0]})
    manifest = {"schema_version": 1, "weights": {name: entry_for(path)}}
    return path, state, manifest


class Opaque:
    """A pickled class instance: refused by ``torch.load(weights_only=True)``."""


def assert_state_equal(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


# ----------------------------------------------------------------------------- manifest


def test_manifest_copies_identical_and_valid() -> None:
    root = REPO_ROOT / "weights_manifest.json"
    shipped = W.PACKAGE_MANIFEST
    assert root.read_bytes() == shipped.read_bytes()
    manifest = W.load_manifest(shipped)
    for info in manifest.weights.values():
        if info.task == "registration":
            assert info.method == ivfusion.registration.RegNet.__name__.lower()
        else:
            assert info.task == "fusion" and info.method in ivfusion.list_models()
    # Canonical serialisation: writing the manifest back changes nothing.
    assert _dump_manifest(json.loads(shipped.read_text())) == shipped.read_bytes()


def _valid_entry() -> Dict[str, Any]:
    return {
        "method": "tinynet", "repo_id": "a/b", "filename": "w.safetensors", "revision": "v0.1.0",
        "sha256": "0" * 64, "size": 10, "license": "MIT", "default": True,
        "training_data": [{"folder": "ivif/train/tno", "terms": "CC BY 4.0"}],
        "recipe": {"iterations": 100, "crop": 64, "batch": 4, "lr": 0.001, "hardware": "cpu"},
        "metrics": {}, "reproduce": "x",
    }


@pytest.mark.parametrize("revision", ["v0.1.0", "0.2", "v1.2.3-rc1", "a" * 40, "0123456789abcdef0123456789abcdef01234567"])
def test_manifest_accepts_pinned_revisions(revision: str) -> None:
    entry = dict(_valid_entry(), revision=revision)
    info = W.Manifest.from_dict({"schema_version": 1, "weights": {"tinynet.x": entry}}).weights["tinynet.x"]
    assert info.revision == revision and info.tag == "x" and info.recipe.epochs is None


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda e: e.pop("sha256"), "missing field 'sha256'"),
        (lambda e: e.update(extra=1), "unknown field(s) ['extra']"),
        (lambda e: e.update(revision="main"), "'revision' must be pinned"),
        (lambda e: e.update(revision="master"), "'revision' must be pinned"),
        (lambda e: e.update(revision="refs/pr/1"), "'revision' must be pinned"),
        (lambda e: e.update(revision="A" * 40), "'revision' must be pinned"),
        (lambda e: e.update(sha256="XYZ"), "'sha256' must be 64"),
        (lambda e: e.update(filename="w.pt"), "'filename' must be a relative '*.safetensors'"),
        (lambda e: e.update(filename="../w.safetensors"), "'filename' must be a relative"),
        (lambda e: e.update(method="other"), "'method' is 'other'"),
        (lambda e: e.update(size=True), "field 'size' must be an integer"),
        (lambda e: e.update(size=-3), "field 'size' must be positive"),
        (lambda e: e.update(default="yes"), "field 'default' must be true/false"),
        (lambda e: e.update(repo_id="nobody"), "'repo_id' must look like 'owner/name'"),
        (lambda e: e.update(training_data=[]), "at least one folder"),
        (lambda e: e["training_data"][0].pop("terms"), "training_data[0]: missing field 'terms'"),
        (lambda e: e["recipe"].pop("iterations"), "give 'epochs' or 'iterations'"),
        (lambda e: e["recipe"].update(lr=0), "'lr' must be a positive number"),
        (lambda e: e.update(metrics={"val": {"SSIM": "high"}}), "field 'SSIM' must be a number"),
        (lambda e: e.update(dtype="int8"), "'dtype' must be one of"),
        (lambda e: e.update(task="detection"), "'task' must be one of"),
    ],
)
def test_manifest_rejects_bad_entries(change: Any, needle: str) -> None:
    entry = copy.deepcopy(_valid_entry())
    change(entry)
    with pytest.raises(W.ManifestError) as info:
        W.Manifest.from_dict({"schema_version": 1, "weights": {"tinynet.x": entry}}, source="m.json")
    assert needle in str(info.value) and "m.json" in str(info.value) and "tinynet.x" in str(info.value)


def test_manifest_rejects_bad_structure() -> None:
    with pytest.raises(W.ManifestError, match="schema_version 2 is not supported"):
        W.Manifest.from_dict({"schema_version": 2, "weights": {}})
    with pytest.raises(W.ManifestError, match="name must look like"):
        W.Manifest.from_dict({"schema_version": 1, "weights": {"TinyNet": _valid_entry()}})
    two = {"tinynet.a": _valid_entry(), "tinynet.b": _valid_entry()}
    with pytest.raises(W.ManifestError, match="2 default weights"):
        W.Manifest.from_dict({"schema_version": 1, "weights": two})


def test_invalid_manifest_fails_at_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "weights": {"tinynet.x": dict(_valid_entry(), revision="main")}}))
    env = dict(os.environ, IVFUSION_MANIFEST=str(bad))
    proc = subprocess.run([sys.executable, "-c", "import ivfusion"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "ManifestError" in proc.stderr and "'revision' must be pinned" in proc.stderr


def test_manifest_selection_read_at_call_time(tmp_path: Path, env: Dict[str, Path], tiny: type,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, manifest = make_weight(tmp_path / "w")
    mfile = tmp_path / "manifest.json"
    mfile.write_text(json.dumps(manifest))
    assert "tinynet.test" not in W.list_weights()
    monkeypatch.setenv("IVFUSION_MANIFEST", str(mfile))
    assert W.list_weights() == ["tinynet.test"] and W.list_weights("didfuse") == []
    assert W.default_weight("tinynet") == "tinynet.test" and W.default_weight("didfuse") is None
    info = W.get_weight_info("tinynet.test")
    assert info.size == path.stat().st_size and info.training_data[0].pairs == 82 and info.recipe.lr == 1e-3
    assert info.to_dict() == manifest["weights"]["tinynet.test"] | {"dtype": "float32", "config": {}}
    monkeypatch.delenv("IVFUSION_MANIFEST")
    with W.use_manifest(manifest):
        assert W.list_weights() == ["tinynet.test"]
    assert W.list_weights("tinynet") == []


def test_unknown_weight_name_lists_known(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    _, _, manifest = make_weight(tmp_path / "w")
    with W.use_manifest(manifest):
        with pytest.raises(ValueError, match=r"unknown weight 'tinynet.tset'\. Did you mean 'tinynet.test'\?.*"
                                             r"Known weights: tinynet.test"):
            W.resolve_weight("tinynet.tset")
        with pytest.raises(ValueError, match="unknown weight"):
            create_model("tinynet", weights="nothing")
    with pytest.raises(FileNotFoundError, match="no such file"):
        W.resolve_weight(str(tmp_path / "missing.safetensors"))


def test_pretrained_model_is_built_with_the_weights_config(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    # A weight trained with non-default constructor options records them in its entry's config;
    # create_model builds that network (width 6, not the registered 4) before loading strictly.
    directory = tmp_path / "w"
    directory.mkdir()
    state = random_state(width=6)
    path = directory / "tinynet.wide.safetensors"
    save_file(state, str(path), metadata={"method": "tinynet"})
    manifest = {"schema_version": 1, "weights": {"tinynet.wide": entry_for(path, config={"width": 6})}}
    (env["bundled"] / path.name).write_bytes(path.read_bytes())
    with W.use_manifest(manifest):
        assert weight_config("tinynet") == {"width": 6}
        net = create_model("tinynet", pretrained=True)
        assert net.conv1.out_channels == 6
        torch.testing.assert_close(net.conv1.weight, state["conv1.weight"])
        with pytest.raises(W.StateDictMismatchError, match="shape"):
            create_model("tinynet", pretrained=True, width=5)  # explicit options still win
    assert weight_config("tinynet", str(path)) == {}


# --------------------------------------------------------------------------- resolution


def test_resolution_order(tmp_path: Path, env: Dict[str, Path], tiny: type, monkeypatch: pytest.MonkeyPatch) -> None:
    src, state, manifest = make_weight(tmp_path / "src")
    data = src.read_bytes()
    envdir = tmp_path / "envdir"
    envdir.mkdir()
    (envdir / src.name).write_bytes(data)
    (env["bundled"] / src.name).write_bytes(data)
    monkeypatch.setenv("IVFUSION_WEIGHTS_DIR", str(envdir))
    explicit = tmp_path / "explicit.safetensors"
    explicit.write_bytes(data)
    with StandInHub() as hub, W.use_manifest(manifest):
        hub.add(REPO_ID, REVISION, src.name, data)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        # Fill the HF cache through the Hub, then take copies away one location at a time.
        from huggingface_hub import hf_hub_download

        cached = Path(hf_hub_download(REPO_ID, src.name, revision=REVISION, cache_dir=str(env["cache"]),
                                      endpoint=hub.url))
        hub.requests.clear()

        assert W.resolve_weight(str(explicit)) == explicit
        assert W.resolve_weight(explicit) == explicit
        assert W.resolve_weight("tinynet.test") == envdir / src.name
        monkeypatch.delenv("IVFUSION_WEIGHTS_DIR")
        assert W.resolve_weight("tinynet.test") == env["bundled"] / src.name
        (env["bundled"] / src.name).unlink()
        assert W.resolve_weight("tinynet.test") == cached
        assert hub.requests == []
        for p in {cached, cached.resolve()}:
            p.unlink()
        fresh = W.resolve_weight("tinynet.test")
        assert [m for m, _ in hub.requests] == ["HEAD", "GET"]
        assert fresh.read_bytes() == data and str(fresh).startswith(str(env["cache"]))
        model = create_model("tinynet", pretrained=True)
        assert_state_equal(model, state)


def test_hub_download_cache_offline_and_tamper(tmp_path: Path, env: Dict[str, Path], tiny: type,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    src, state, manifest = make_weight(tmp_path / "src")
    mfile = tmp_path / "manifest.json"
    mfile.write_text(json.dumps(manifest))
    monkeypatch.setenv("IVFUSION_MANIFEST", str(mfile))
    hub = StandInHub().start()
    try:
        commit = hub.add(REPO_ID, REVISION, src.name, src.read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        model = ivfusion.load_model("tinynet")
        assert_state_equal(model, state)
        assert not model.training
        assert [m for m, _ in hub.requests] == ["HEAD", "GET"]
        assert hub.requests[0][1] == f"/{REPO_ID}/resolve/{REVISION}/{src.name}"
        snapshot = env["cache"] / "models--ivfusion-test--tinynet" / "snapshots" / commit / src.name
        assert snapshot.is_file()
        # Second call: served from the cache, no request at all.
        assert_state_equal(create_model("tinynet", pretrained=True), state)
        assert len(hub.requests) == 2
    finally:
        hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.is_offline()
    assert_state_equal(ivfusion.load_model("tinynet", weights="tinynet.test"), state)

    # Tamper with the cached blob (same size): refused, and the model keeps its own values.
    blob = snapshot.resolve()
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    st = blob.stat()
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    net = create_model("tinynet")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(W.ChecksumError) as info:
        load_weights(net, "tinynet", None)
    msg = str(info.value)
    assert "tinynet.test" in msg and "SHA-256 mismatch" in msg and "not used" in msg and str(blob) in msg
    assert_state_equal(net, before)


def test_offline_and_not_cached(tmp_path: Path, env: Dict[str, Path], tiny: type,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    src, _, manifest = make_weight(tmp_path / "src")
    with StandInHub() as hub, W.use_manifest(manifest):
        hub.add(REPO_ID, REVISION, src.name, src.read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(W.WeightNotFoundError) as info:
            create_model("tinynet", pretrained=True)
        assert hub.requests == []
    msg = str(info.value)
    assert "'tinynet.test' is not available offline" in msg and "HF_HUB_OFFLINE" in msg
    assert "IVFUSION_WEIGHTS_DIR" in msg and str(env["cache"]) in msg


def test_hub_unreachable_or_file_missing(tmp_path: Path, env: Dict[str, Path], tiny: type,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, manifest = make_weight(tmp_path / "src")
    import time

    monkeypatch.setattr(time, "sleep", lambda s: None)  # skip huggingface_hub's retry back-off (~23 s)
    with W.use_manifest(manifest):
        with pytest.raises(W.WeightNotFoundError, match=r"'tinynet.test': could not download .*127\.0\.0\.1:9"):
            W.resolve_weight("tinynet.test")
        with StandInHub() as hub:  # the Hub answers, but the file is not there
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            with pytest.raises(W.WeightNotFoundError, match="could not download"):
                W.resolve_weight("tinynet.test")
            assert hub.requests and hub.requests[0][0] == "HEAD"


def test_checksum_and_size_mismatch(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    src, _, manifest = make_weight(tmp_path / "src")
    other, _, _ = make_weight(tmp_path / "other", seed=1)  # same size, other values
    assert other.stat().st_size == src.stat().st_size
    (env["bundled"] / src.name).write_bytes(other.read_bytes())
    with W.use_manifest(manifest):
        with pytest.raises(W.ChecksumError, match="SHA-256 mismatch.*not used"):
            W.resolve_weight("tinynet.test")
        (env["bundled"] / src.name).write_bytes(src.read_bytes()[:-10])
        with pytest.raises(W.ChecksumError, match=r"has \d+ bytes, the manifest says \d+"):
            create_model("tinynet", pretrained=True)


def test_digest_is_memoised(tmp_path: Path, env: Dict[str, Path], tiny: type, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _, manifest = make_weight(env["bundled"])
    calls = []
    real = pretrained_io._hash_file
    monkeypatch.setattr(pretrained_io, "_hash_file", lambda p: calls.append(p) or real(p))
    with W.use_manifest(manifest):
        for _ in range(3):
            W.resolve_weight("tinynet.test")
        assert len(calls) == 1
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
        W.resolve_weight("tinynet.test")
        assert len(calls) == 2
        W.verify_all()  # verify always re-hashes
        assert len(calls) == 3


# ---------------------------------------------------------------------- corrupt files / strict


def test_corrupt_files_are_rejected(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    good, _, _ = make_weight(tmp_path / "src")
    data = good.read_bytes()
    cases = {
        "truncated": (data[:-7], "truncated"),
        "short": (b"abc", "only 3 bytes"),
        "trailing": (data + b"xx", "2 unexpected bytes"),
        "badjson": ((5).to_bytes(8, "little") + b"{oops", "header is not JSON"),
    }
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"w": torch.ones(2)}, pickled)
    for key, (blob, needle) in cases.items():
        path = tmp_path / f"{key}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(W.CorruptWeightsError, match=needle) as info:
            load_weights(create_model("tinynet"), "tinynet", str(path))
        assert str(path) in str(info.value) and "not a valid safetensors file" in str(info.value)
    with pytest.raises(W.CorruptWeightsError, match="not a valid safetensors file"):
        W.resolve_weight(pickled)


def test_state_dict_mismatch_messages(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    state = random_state(width=4)
    wide = tmp_path / "wide.safetensors"
    save_file(random_state(width=6), str(wide))
    with pytest.raises(W.StateDictMismatchError) as info:
        create_model("tinynet", weights=str(wide))
    msg = str(info.value)
    assert "TinyNet" in msg and str(wide) in msg
    assert "conv1.weight (6, 2, 3, 3) in the file vs (4, 2, 3, 3) in the model" in msg
    # conv1 weight/bias, bn weight/bias/running_mean/running_var, conv2.weight: 7, the first 5 quoted
    assert "7 wrong shape(s)" in msg and ", ... (2 more)" in msg

    partial = dict(state)
    del partial["conv2.bias"]
    partial["head.weight"] = torch.zeros(1)
    odd = tmp_path / "odd.safetensors"
    save_file(partial, str(odd))
    with pytest.raises(W.StateDictMismatchError, match=r"1 missing key\(s\): conv2.bias; 1 unexpected key\(s\): head.weight"):
        create_model("tinynet", weights=odd)
    # A matching file loads, also via a path given as a string.
    fine = tmp_path / "fine.safetensors"
    save_file(state, str(fine))
    assert_state_equal(create_model("tinynet", weights=str(fine)), state)


def test_method_mismatch_and_no_default(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    other = tmp_path / "other.safetensors"
    save_file(random_state(), str(other), metadata={"method": "didfuse"})
    with pytest.raises(W.StateDictMismatchError, match="exported for method 'didfuse', not 'tinynet'"):
        create_model("tinynet", weights=other)
    with pytest.raises(W.WeightNotFoundError, match="no default pretrained weight for method 'tinynet'"):
        create_model("tinynet", pretrained=True)
    _, _, manifest = make_weight(env["bundled"])
    with W.use_manifest(manifest):
        with pytest.raises(ValueError, match="'tinynet.test' is a weight for method 'tinynet', not 'didfuse'"):
            load_weights(create_model("didfuse"), "didfuse", "tinynet.test")


@pytest.mark.skipif(not (REFERENCE / "didfuse_official.safetensors").is_file(), reason="reference fixtures absent")
def test_reads_reference_safetensors() -> None:
    path = REFERENCE / "didfuse_official.safetensors"
    header, _ = W.read_safetensors_header(path)
    tensors, _ = W.load_state_dict_file(path)
    assert len(header) == len(tensors) == 53
    assert all(tuple(tensors[k].shape) == tuple(v["shape"]) for k, v in header.items())


# ------------------------------------------------------------------------------------ export


def _checkpoint(tmp_path: Path, state: Dict[str, torch.Tensor], **extra: Any) -> Path:
    ckpt = {"model": state, "method": "tinynet", "config": {"model": {"width": 4}, "lr": 1e-3}, "step": 123,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "rng": torch.get_rng_state()}
    ckpt.update(extra)
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    return path


def test_export_roundtrip_fp32(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    state = random_state()
    ckpt = _checkpoint(tmp_path, state, manifest={"license": "CC BY 4.0"})
    out = tmp_path / "out" / "tinynet.test.safetensors"
    res = export_checkpoint(ckpt, out, name="tinynet.test", entry={"reproduce": "ivfusion train x"})
    tensors, meta = W.load_state_dict_file(out)
    assert set(tensors) == set(state) and all(torch.equal(tensors[k], v) for k, v in state.items())
    assert meta["method"] == "tinynet" and meta["version"] == ivfusion.__version__ and meta["step"] == "123"
    assert json.loads(meta["config"]) == {"model": {"width": 4}, "lr": 1e-3} and meta["name"] == "tinynet.test"
    assert meta["license"] == "CC BY 4.0" and meta["dtype"] == "float32"
    assert res.sha256 == hashlib.sha256(out.read_bytes()).hexdigest() and res.size == out.stat().st_size
    assert res.entry["sha256"] == res.sha256 and res.entry["filename"] == out.name
    assert res.entry["license"] == "CC BY 4.0" and res.entry["reproduce"] == "ivfusion train x"
    assert set(res.missing) == {"training_data", "recipe", "metrics"}
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary files left
    # The exported file loads strictly into a fresh model.
    assert_state_equal(create_model("tinynet", weights=out), state)


def test_export_fp16_and_wrappers(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    state = random_state()
    wrapped = {f"module.{k}": v for k, v in state.items()}  # as saved from DistributedDataParallel
    ckpt = _checkpoint(tmp_path, wrapped)
    out = tmp_path / "half.safetensors"
    res = export_checkpoint(ckpt, out, dtype="float16")
    tensors, meta = W.load_state_dict_file(out)
    assert meta["dtype"] == "float16" and res.entry["dtype"] == "float16"
    assert tensors["conv1.weight"].dtype == torch.float16
    assert tensors["bn.num_batches_tracked"].dtype == torch.int64 and int(tensors["bn.num_batches_tracked"]) == 7
    model = create_model("tinynet", weights=out)
    for k, v in model.state_dict().items():
        assert v.dtype == state[k].dtype
        if v.is_floating_point():
            assert torch.equal(v, state[k].half().float())
            assert torch.allclose(v, state[k], rtol=2 ** -11, atol=2 ** -24)
    # A plain safetensors state dict is accepted as input too (method from its header).
    again = export_checkpoint(out, tmp_path / "again.safetensors")
    assert again.entry["method"] == "tinynet" and again.metadata["dtype"] == "float32"
    # Values beyond the float16 range are refused.
    big = dict(state)
    big["conv2.bias"] = torch.full((1,), 1e6)
    with pytest.raises(ValueError, match="'conv2.bias' has values beyond the float16 range"):
        export_checkpoint(_checkpoint(tmp_path, big), tmp_path / "big.safetensors", dtype="float16")


def test_export_refuses_broken_checkpoints(tmp_path: Path, env: Dict[str, Path], tiny: type) -> None:
    out = tmp_path / "out" / "x.safetensors"
    with pytest.raises(W.StateDictMismatchError, match="conv1.weight"):
        export_checkpoint(_checkpoint(tmp_path, random_state(width=6)), out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    # Constructor options from config["model"] make the wide state dict fit.
    wide = _checkpoint(tmp_path, random_state(width=6), config={"model": {"width": 6}})
    res = export_checkpoint(wide, out)
    assert res.entry["config"] == {"width": 6}
    with pytest.raises(ValueError, match="checkpoint says 'tinynet'"):
        export_checkpoint(wide, out, method="didfuse")

    torch.save({"model": random_state(), "method": "tinynet", "thing": Opaque()}, tmp_path / "unsafe.pt")
    with pytest.raises(W.CorruptWeightsError, match="not a readable training checkpoint"):
        export_checkpoint(tmp_path / "unsafe.pt", out)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(W.CorruptWeightsError, match="expected a dict with a 'model' state dict"):
        export_checkpoint(tmp_path / "list.pt", out)
    with pytest.raises(ValueError, match="output: expected a path ending in .safetensors"):
        export_checkpoint(wide, tmp_path / "x.pt")


def test_update_manifest_keeps_copies_identical(tmp_path: Path, env: Dict[str, Path], tiny: type,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        p.write_text('{\n  "schema_version": 1,\n  "weights": {}\n}\n')
    state = random_state()
    envdir = tmp_path / "envdir"
    res = export_checkpoint(_checkpoint(tmp_path, state), envdir / "tinynet.v1.safetensors", name="tinynet.v1")
    entry = {**entry_for(res.path), **res.entry}
    W.update_manifest("tinynet.v1", entry, paths=[a, b])
    W.update_manifest("tinynet.v2", dict(entry, default=True), paths=[a, b])
    assert a.read_bytes() == b.read_bytes()
    m = W.load_manifest(a)
    assert not m.weights["tinynet.v1"].default and m.weights["tinynet.v2"].default  # one default per method
    monkeypatch.setenv("IVFUSION_WEIGHTS_DIR", str(envdir))
    with W.use_manifest(a):
        assert_state_equal(create_model("tinynet", weights="tinynet.v1"), state)
    b.write_text(b.read_text() + " ")
    with pytest.raises(W.ManifestError, match="differ"):
        W.update_manifest("tinynet.v3", entry, paths=[a, b])
    with pytest.raises(W.ManifestError, match="missing field 'recipe'"):
        W.update_manifest("tinynet.v3", {k: v for k, v in entry.items() if k != "recipe"}, paths=[a])


# ------------------------------------------------------------------------------ verify + CLI


def test_verify_all(tmp_path: Path, env: Dict[str, Path], tiny: type, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _, manifest = make_weight(env["bundled"])
    envdir = tmp_path / "envdir"
    envdir.mkdir()
    (envdir / src.name).write_bytes(src.read_bytes()[:-1])
    monkeypatch.setenv("IVFUSION_WEIGHTS_DIR", str(envdir))
    save_file(random_state(), str(env["bundled"] / "stray.safetensors"))
    with W.use_manifest(manifest):
        results = {(r.location, r.status) for r in W.verify_all()}
    assert results == {("env", "mismatch"), ("bundled", "ok"), ("bundled", "unlisted")}


def test_cli_weights(tmp_path: Path, env: Dict[str, Path], tiny: type, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        p.write_text('{\n  "schema_version": 1,\n  "weights": {}\n}\n')
    monkeypatch.setenv("IVFUSION_MANIFEST", str(a))
    assert cli.main(["weights", "list"]) == 0
    assert "no weights in the manifest" in capsys.readouterr().out
    ckpt = _checkpoint(tmp_path, random_state())
    out = env["bundled"] / "tinynet.cli.safetensors"
    fields = {k: v for k, v in entry_for(ckpt).items()
              if k in ("training_data", "recipe", "metrics", "reproduce", "license")}
    argv = ["weights", "export", str(ckpt), "-o", str(out), "--name", "tinynet.cli", "--default",
            "--revision", "v0.2.0", "--entry", json.dumps(fields), "--update-manifest",
            "--manifest", str(a), "--manifest", str(b)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in printed and a.read_bytes() == b.read_bytes()
    assert W.get_weight_info("tinynet.cli").sha256 == digest and W.default_weight("tinynet") == "tinynet.cli"
    assert cli.main(["weights", "list", "-m", "tinynet"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tinynet.cli")][0]
    assert "yes" in row and "bundled" in row and "v0.2.0" in row
    assert cli.main(["weights", "verify"]) == 0
    assert "ok" in capsys.readouterr().out
    out.write_bytes(out.read_bytes()[:-1])
    assert cli.main(["weights", "verify"]) == 1
    assert "failed verification" in capsys.readouterr().err
    # An incomplete entry cannot go into the manifest.
    assert cli.main(["weights", "export", str(ckpt), "-o", str(tmp_path / "y.safetensors"), "--name",
                     "tinynet.y", "--update-manifest", "--manifest", str(a)]) == 1
    assert "missing field(s)" in capsys.readouterr().err
