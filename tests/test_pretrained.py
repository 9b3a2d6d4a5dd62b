"""The weights that ship in the package: present, intact, loadable, and better than averaging."""
import hashlib

import pytest

import ivfusion
from ivfusion import pretrained as W
from ivfusion.metrics import evaluate

from .conftest import VAL_DIR, require

SHIPPED = [name for name in ivfusion.list_models() if W.default_weight(name) is not None]
#: A validation pair outside the first 12, which training used to pick checkpoints.
PAIR = "FLIR_08248"


@pytest.mark.parametrize("method", SHIPPED)
def test_bundled_weight_is_intact_and_loads(method):
    info = W.get_weight_info(W.default_weight(method))
    path = W.BUNDLED_DIR / info.filename
    assert path.is_file(), f"{path} is not bundled"
    data = path.read_bytes()
    assert len(data) == info.size
    assert hashlib.sha256(data).hexdigest() == info.sha256
    assert W.resolve_weight(info.name) == path  # the bundled copy is what resolution finds
    net = ivfusion.load_model(method, device="cpu")
    assert not net.training


@pytest.mark.slow
@pytest.mark.parametrize("method", SHIPPED)
def test_pretrained_beats_average_on_a_validation_pair(method):
    val = require(VAL_DIR)
    ir, vis = val / "ir" / f"{PAIR}.jpg", val / "vi" / f"{PAIR}.jpg"
    scores = evaluate(ivfusion.fuse(ir, vis, method=method, device="cpu"), ir, vis, metrics=["VIF", "Qabf"])
    baseline = evaluate(ivfusion.fuse(ir, vis, method="average"), ir, vis, metrics=["VIF", "Qabf"])
    assert scores["VIF"] > baseline["VIF"], (scores, baseline)
    assert scores["Qabf"] > baseline["Qabf"], (scores, baseline)


def test_default_fuse_works_offline_from_the_bundled_copy(tmp_path, rng):
    """`import ivfusion; ivfusion.fuse('a.png', 'b.png')` on a machine with no network and no cache."""
    import os
    import subprocess
    import sys

    from ivfusion.io import write_image

    from .conftest import smooth_image

    write_image(tmp_path / "a.png", smooth_image(rng, 48, 64))
    write_image(tmp_path / "b.png", smooth_image(rng, 48, 64, channels=3))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"),
               HF_ENDPOINT="http://127.0.0.1:9", IVFUSION_WEIGHTS_DIR="")
    code = "import ivfusion; f = ivfusion.fuse('a.png', 'b.png', device='cpu'); print(f.shape, f.dtype)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(48, 64, 3) uint8"
    assert not (tmp_path / "empty_hf_home").exists()  # nothing was downloaded or cached


def test_every_network_ships_a_default_weight():
    assert SHIPPED == ivfusion.list_models()
    for method in SHIPPED:
        info = W.get_weight_info(W.default_weight(method))
        assert info.method == method and info.default
        # reduced CPU schedules must say so next to the weight
        assert info.recipe.notes and "GPU" in info.recipe.notes
