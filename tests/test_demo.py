"""The web demo without a browser: reading uploads within the limits, the options, fusing and scoring
(ivfusion.demo._work), the ``/fuse`` endpoint through gradio_client with every method and option, the
model cache, uploads deleted, and ``ivfusion demo`` as a command (serving, stopping, without Gradio)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import ivfusion
from ivfusion.cli import main
from ivfusion.demo._work import (
    DEMO_METRICS,
    DemoInputError,
    as_seen,
    demo_options,
    fuse_methods,
    fusion_kwargs,
    read_upload,
)
from ivfusion.io import read_image, write_image
from ivfusion.metrics import evaluate

from .conftest import REPO_ROOT
from .demo_support import demo_server, metrics_rows, option_values, optional, read_png, result_pngs

METHODS = ivfusion.list_methods(available_only=True)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    """Small pairs cut from the bundled ``night`` sample: 8-bit PNG + JPEG at 160x120, the same
    infrared as a raw-thermal-like 16-bit TIFF (narrow range), a 16-bit grey visible PNG, and a
    visible image at half size."""
    d = tmp_path_factory.mktemp("pairs")
    ir, vis = ivfusion.data.sample_pair("night")
    ir_s = np.asarray(Image.fromarray(ir).resize((160, 120), Image.BILINEAR))
    vis_s = np.asarray(Image.fromarray(vis).resize((160, 120), Image.BILINEAR))
    write_image(d / "ir.png", ir_s)
    Image.fromarray(vis_s).save(d / "vis.jpg", quality=95)
    write_image(d / "ir16.tif", (20000 + 12 * ir_s.astype(np.int64)).astype(np.uint16))
    write_image(d / "vis16.png", (vis_s.mean(axis=2) * 257).round().astype(np.uint16))
    write_image(d / "vis_half.png", np.asarray(Image.fromarray(vis_s).resize((80, 60), Image.BILINEAR)))
    (d / "corrupt.png").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return d


# ------------------------------------------------------------------------------------------------
# Without a server


def test_read_upload_decodes_like_read_image(pair_dir):
    for name in ("ir.png", "vis.jpg", "ir16.tif", "vis16.png"):
        got = read_upload(pair_dir / name, "Infrared image")
        want = read_image(pair_dir / name)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert read_upload(pair_dir / "ir16.tif", "x").dtype == np.uint16


def test_read_upload_refuses_bad_files_without_showing_server_paths(pair_dir, tmp_path):
    with pytest.raises(DemoInputError, match=r"Infrared image 'corrupt.png' is not an image ivfusion can read") as e:
        read_upload(pair_dir / "corrupt.png", "Infrared image")
    assert str(pair_dir) not in str(e.value)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((pair_dir / "ir.png").read_bytes()[:2000])
    with pytest.raises(DemoInputError, match=r"'cut.png' is not an image") as e:
        read_upload(truncated, "Visible image")
    assert str(tmp_path) not in str(e.value)
    with pytest.raises(DemoInputError, match=r"'ir.png' is 160x120 pixels \(0.0 megapixels\); the demo accepts up "
                                             r"to 0.01 megapixels"):
        read_upload(pair_dir / "ir.png", "Infrared image", max_pixels=10_000)


def test_options_map_to_fuse_arguments():
    options = demo_options(cuda=False)
    names = [o.name for o in options]
    assert names == ["resize", "precision", "device", "rule"]
    assert not options[names.index("device")].visible and demo_options(cuda=True)[2].visible
    assert "fp16" not in [v for _, v in options[1].choices]
    assert "fp16" in [v for _, v in demo_options(cuda=True)[1].choices]
    defaults = [o.default for o in options]
    assert fusion_kwargs("average", options, defaults) == {}
    assert fusion_kwargs("didfuse", options, defaults) == {"rule": "sum"}
    given = ["ir_to_vis", "bf16", "cpu", "l1_norm"]
    assert fusion_kwargs("didfuse", options, given) == dict(resize="ir_to_vis", precision="bf16", device="cpu",
                                                           rule="l1_norm")
    assert fusion_kwargs("refinefuse", options, given) == dict(resize="ir_to_vis", precision="bf16", device="cpu")
    with pytest.raises(DemoInputError, match=r"Precision: expected one of 'auto', 'fp32', 'bf16', got 'fp64'"):
        fusion_kwargs("average", options, ["none", "fp64", "auto", "sum"])
    with pytest.raises(DemoInputError, match=r"DIDFuse rule: expected one of .*got 'max'"):
        fusion_kwargs("average", options, ["none", "auto", "auto", "max"])  # checked even where unused
    with pytest.raises(DemoInputError, match="expected 4 option values"):
        fusion_kwargs("average", options, ["none"])


def test_as_seen_stretches_16_bit_infrared_and_resamples():
    raw = np.array([[20000, 20100], [20200, 20300]], dtype=np.uint16)
    np.testing.assert_array_equal(as_seen(raw, stretch=True, size=(2, 2)), [[0, 85], [170, 255]])
    np.testing.assert_array_equal(as_seen(raw, stretch=False, size=(2, 2)), np.round(raw / 257).astype(np.uint8))
    rgb = np.zeros((6, 8, 3), np.uint8)
    assert as_seen(rgb, stretch=False, size=(3, 4)).shape == (3, 4, 3)


def test_fuse_methods_equals_fuse_and_evaluate(pair_dir, tmp_path):
    ir, vis = read_image(pair_dir / "ir16.tif"), read_image(pair_dir / "vis.jpg")
    options = demo_options(cuda=False)
    steps = []
    res = fuse_methods(ir, vis, ["average", "laplacian", "average"], options, [o.default for o in options],
                       tmp_path, "pair", progress=lambda f, d: steps.append((f, d)))
    assert [r.method for r in res.results] == ["average", "laplacian"]  # once each
    assert steps[0] == (0.0, "average (1/2): fusing") and steps[-1] == (1.0, "done")
    assert [f for f, _ in steps] == sorted(f for f, _ in steps)
    ir_seen = as_seen(ir, stretch=True, size=(120, 160))
    np.testing.assert_array_equal(res.ir_seen, ir_seen)
    for r in res.results:
        want = ivfusion.fuse(pair_dir / "ir16.tif", pair_dir / "vis.jpg", r.method)
        np.testing.assert_array_equal(r.fused, want)
        np.testing.assert_array_equal(read_png(r.png), want)
        assert r.png == tmp_path / f"pair_{r.method}.png"
        scores = evaluate(want, ir_seen, vis, list(DEMO_METRICS))
        assert r.metrics == pytest.approx(scores, rel=1e-12)
        assert r.seconds > 0 and not r.loaded_weights
    header, rows = res.table()
    assert header == ["method", "seconds", *DEMO_METRICS] and [row[0] for row in rows] == ["average", "laplacian"]


def test_fuse_methods_refuses_bad_requests(pair_dir, tmp_path):
    ir, vis = read_image(pair_dir / "ir.png"), read_image(pair_dir / "vis_half.png")
    options = demo_options(cuda=False)
    defaults = [o.default for o in options]
    with pytest.raises(DemoInputError, match="choose at least one method"):
        fuse_methods(ir, ir, [], options, defaults, tmp_path)
    with pytest.raises(DemoInputError, match=r"unknown or unavailable method\(s\) 'nope'; available: didfuse"):
        fuse_methods(ir, ir, ["nope"], options, defaults, tmp_path)
    with pytest.raises(DemoInputError, match=r"the infrared image is 160x120 and the visible one 80x60 \(width x "
                                             r"height\); choose how to resample one of them under 'Different sizes'"):
        fuse_methods(ir, vis, ["average"], options, defaults, tmp_path)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# The /fuse endpoint through gradio_client


@pytest.fixture(scope="module")
def server():
    with demo_server() as s:
        yield s


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def fuse_api(client, ir=None, vis=None, methods=("average",), example="", **options):
    return client.predict(ir=optional(ir), vis=optional(vis), example=example, methods=list(methods),
                          **option_values(**options), api_name="/fuse")


def api_error(client, match, **kwargs):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=match):
        fuse_api(client, **kwargs)


def test_api_every_method_equals_fuse_and_uploads_are_deleted(client, server, pair_dir):
    out = fuse_api(client, pair_dir / "ir.png", pair_dir / "vis.jpg", METHODS)
    pngs, rows = result_pngs(out, METHODS), metrics_rows(out)
    assert sorted(pngs) == sorted(rows) == sorted(METHODS)
    ir, vis = read_image(pair_dir / "ir.png"), read_image(pair_dir / "vis.jpg")
    for m in METHODS:
        want = ivfusion.fuse(pair_dir / "ir.png", pair_dir / "vis.jpg", m)
        assert want.shape == (120, 160, 3)
        np.testing.assert_array_equal(read_png(pngs[m]), want, err_msg=m)
        scores = evaluate(want, ir, vis, list(DEMO_METRICS))
        assert [rows[m][k] for k in DEMO_METRICS] == [round(scores[k], 4) for k in DEMO_METRICS], m
        assert rows[m]["seconds"] >= 0 and (rows[m]["seconds"] > 0 or ivfusion.method_info(m).kind == "classical")
    assert out[0].startswith(f"Fused a 160x120 pair with {len(METHODS)} method(s)")
    names = {p.name for p in server.files()}
    assert "ir.png" not in names and "vis.jpg" not in names  # the uploads are gone after the response
    assert {f"ir_{m}.png" for m in METHODS} <= names  # the results stay, for the page to fetch


def test_api_didfuse_rules(client, pair_dir):
    outs = {}
    for rule in ("sum", "average", "l1_norm"):
        png = result_pngs(fuse_api(client, pair_dir / "ir.png", pair_dir / "vis.jpg", ["didfuse"], rule=rule),
                          ["didfuse"])["didfuse"]
        outs[rule] = read_png(png)
        want = ivfusion.fuse(pair_dir / "ir.png", pair_dir / "vis.jpg", "didfuse", rule=rule)
        np.testing.assert_array_equal(outs[rule], want, err_msg=rule)
    assert not np.array_equal(outs["sum"], outs["average"]) and not np.array_equal(outs["sum"], outs["l1_norm"])


def test_api_precision_and_device(client, pair_dir):
    got = {}
    for precision in ("fp32", "bf16"):
        out = fuse_api(client, pair_dir / "ir.png", pair_dir / "vis.jpg", ["f3net"], precision=precision, device="cpu")
        got[precision] = read_png(result_pngs(out, ["f3net"])["f3net"])
        want = ivfusion.fuse(pair_dir / "ir.png", pair_dir / "vis.jpg", "f3net", precision=precision, device="cpu")
        np.testing.assert_array_equal(got[precision], want, err_msg=precision)
    assert not np.array_equal(got["fp32"], got["bf16"])
    if not torch.cuda.is_available():
        api_error(client, "device: CUDA was requested but torch.cuda.is_available", ir=pair_dir / "ir.png",
                  vis=pair_dir / "vis.jpg", device="cuda")
    # Values outside a drop-down's choices are refused by Gradio itself, before the handler
    api_error(client, r"fp64 is not in the list of choices: \['auto', 'fp32', 'bf16'\]", ir=pair_dir / "ir.png",
              vis=pair_dir / "vis.jpg", precision="fp64")


def test_api_resize(client, pair_dir):
    ir, vis = pair_dir / "ir.png", pair_dir / "vis_half.png"
    api_error(client, "choose how to resample one of them under 'Different sizes'", ir=ir, vis=vis)
    for resize, shape in (("ir_to_vis", (60, 80, 3)), ("vis_to_ir", (120, 160, 3))):
        out = fuse_api(client, ir, vis, ["average", "refinefuse"], resize=resize)
        rows = metrics_rows(out)
        for m, png in result_pngs(out, ["average", "refinefuse"]).items():
            want = ivfusion.fuse(ir, vis, m, resize=resize)
            assert want.shape == shape
            np.testing.assert_array_equal(read_png(png), want, err_msg=f"{m} {resize}")
            assert all(np.isfinite(rows[m][k]) for k in DEMO_METRICS)


def test_api_16_bit_inputs(client, pair_dir):
    out = fuse_api(client, pair_dir / "ir16.tif", pair_dir / "vis.jpg", ["average"])
    np.testing.assert_array_equal(read_png(result_pngs(out, ["average"])["average"]),
                                  ivfusion.fuse(pair_dir / "ir16.tif", pair_dir / "vis.jpg", "average"))
    out = fuse_api(client, pair_dir / "ir16.tif", pair_dir / "vis16.png", ["guided"])
    got = read_png(result_pngs(out, ["guided"])["guided"])
    want = ivfusion.fuse(pair_dir / "ir16.tif", pair_dir / "vis16.png", "guided")
    assert got.dtype == want.dtype == np.uint16  # a 16-bit grey result downloads as a 16-bit PNG
    np.testing.assert_array_equal(got, want)


def test_api_example_pair(client):
    out = fuse_api(client, example="mri_pet", methods=["max"])
    ir, vis = ivfusion.data.sample_pair("mri_pet", as_path=True)
    png = result_pngs(out, ["max"])["max"]
    assert png.name == "mri_pet_max.png"
    np.testing.assert_array_equal(read_png(png), ivfusion.fuse(ir, vis, "max"))


def test_api_bad_requests_get_messages_and_the_server_keeps_serving(client, server, pair_dir, tmp_path):
    ir, vis = pair_dir / "ir.png", pair_dir / "vis.jpg"
    api_error(client, r"Infrared image 'corrupt.png' is not an image ivfusion can read", ir=pair_dir / "corrupt.png",
              vis=vis)
    api_error(client, "upload the visible image too", ir=ir)
    api_error(client, "choose at least one method", ir=ir, vis=vis, methods=[])
    api_error(client, "upload an infrared and a visible image, or choose an example pair")
    big = tmp_path / "big.png"
    Image.new("L", (5000, 4001)).save(big)  # 20.005 megapixels, a small file
    api_error(client, r"'big.png' is 5000x4001 pixels \(20.0 megapixels\); the demo accepts up to 20 megapixels",
              ir=big, vis=vis)
    assert not [p for p in server.files() if p.name in ("corrupt.png", "big.png", "ir.png", "vis.jpg")]
    out = fuse_api(client, ir, vis, ["average"])
    assert "average" in result_pngs(out, ["average"])


def test_a_request_failing_midway_keeps_no_result(client, server, pair_dir, monkeypatch):
    from ivfusion.demo import _work

    def failing_fuse(ir, vis, method, **kwargs):
        if method == "guided":
            raise RuntimeError("guided: out of luck")
        return ivfusion.fuse(ir, vis, method, **kwargs)

    monkeypatch.setattr(_work, "fuse", failing_fuse)  # the server runs in this process
    before = server.files()
    api_error(client, "guided: out of luck", ir=pair_dir / "ir.png", vis=pair_dir / "vis.jpg",
              methods=["average", "guided"])
    assert server.files() == before  # average's PNG, written first, was deleted with the failure


def test_uploads_over_the_file_limit_are_refused(server, tmp_path):
    import httpx

    from ivfusion.demo import MAX_FILE_BYTES

    big = tmp_path / "big.tif"
    with open(big, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing written to disk
    before = server.files()
    with open(big, "rb") as fh:
        response = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.tif", fh)}, timeout=60)
    assert response.status_code == 413 and f"maximum allowed size of {MAX_FILE_BYTES} bytes" in response.text
    assert server.files() == before  # nothing of it kept


def test_api_loads_each_network_once(client, pair_dir):
    from ivfusion.fusion import _load_model

    fuse_api(client, pair_dir / "ir.png", pair_dir / "vis.jpg", ["didfuse"])
    misses = _load_model.cache_info().misses
    out = fuse_api(client, pair_dir / "ir.png", pair_dir / "vis.jpg", ["didfuse"], rule="average")
    assert _load_model.cache_info().misses == misses
    assert "didfuse" in out[0] and "loading its weights" not in out[0]


# ------------------------------------------------------------------------------------------------
# The command


def test_import_ivfusion_does_not_import_gradio():
    code = "import sys, ivfusion, ivfusion.demo, ivfusion.cli; assert 'gradio' not in sys.modules, 'gradio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT,
                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_cli_demo_without_gradio_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    before = os.environ.get("GRADIO_TEMP_DIR")
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err == "ivfusion: error: the web demo needs Gradio: pip install 'ivfusion[demo]'\n"
    assert os.environ.get("GRADIO_TEMP_DIR") == before


def test_cli_demo_serves_prints_the_url_and_cleans_up_on_sigterm(tmp_path):
    pytest.importorskip("gradio", reason="the demo needs the extra [demo] (gradio)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("GRADIO_TEMP_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "ivfusion", "demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the server is up (or the process ends)
        assert line.startswith("ivfusion demo: serving on http://127.0.0.1:") and "(Ctrl+C to stop)" in line, \
            line + proc.stderr.read()
        url = line.split()[4]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and b"ivfusion demo" in response.read()
        [folder] = tmp_path.glob("ivfusion-demo-*")  # the server's private folder
        assert folder.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not list(tmp_path.glob("ivfusion-demo-*"))
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_demo_refuses_a_bad_port(capsys):
    assert main(["demo", "--port", "70000"]) == 1
    assert capsys.readouterr().err == "ivfusion: error: --port must be in 1..65535, got 70000\n"


def test_space_files_match_the_package():
    gradio = pytest.importorskip("gradio", reason="the demo needs the extra [demo] (gradio)")
    import configparser
    import runpy

    space = REPO_ROOT / "examples" / "space"
    app = runpy.run_path(str(space / "app.py"), run_name="space")["demo"]  # built, not launched
    assert isinstance(app, gradio.Blocks) and app.title == "ivfusion demo"
    # building the page writes nothing into the package (Gradio writes .pyi stubs for component subclasses)
    assert sorted(p.name for p in (REPO_ROOT / "ivfusion" / "demo").glob("*.py*")) == ["__init__.py", "_work.py"]
    lines = (space / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert f"./ivfusion-{ivfusion.__version__}-py3-none-any.whl[demo]" in lines
    ci_torch = next(w.strip('"') for w in (REPO_ROOT / ".ci" / "run").read_text().split() if w.startswith('"torch=='))
    assert ci_torch in lines  # the torch CI tests with
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    assert cfg["options.extras_require"]["demo"].split() == ["gradio>=6,<7"]
    card = (space / "README.md").read_text(encoding="utf-8").splitlines()
    sdk = next(line.split(":")[1].strip() for line in card if line.startswith("sdk_version"))
    assert sdk.split(".")[0] == "6" and gradio.__version__.split(".")[0] == "6"
