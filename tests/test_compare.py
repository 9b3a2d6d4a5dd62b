"""Comparison grids (ivfusion.compare, `ivfusion compare`) on tiny synthetic pairs, classical methods only."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import ivfusion
from ivfusion import compare as C
from ivfusion.cli import main
from ivfusion.io import read_image, write_image

from .conftest import smooth_image

H, W = 40, 52
STEMS = ("a_grey", "b_colour", "c_colour")


@pytest.fixture
def data(tmp_path, rng):
    """tmp_path/data/{ir,vi}: three 40x52 pairs; the first visible image grey, the others colour."""
    root = tmp_path / "data"
    for stem in STEMS:
        write_image(root / "ir" / f"{stem}.png", smooth_image(rng, H, W))
        write_image(root / "vi" / f"{stem}.png", smooth_image(rng, H, W, channels=0 if "grey" in stem else 3))
    return root


def _origin(row, col, cell):
    """Top-left (x, y) of a cell by the documented rule."""
    return C.LABEL_WIDTH + C.GAP + col * (cell + C.GAP), C.HEADER_HEIGHT + C.GAP + row * (cell + C.GAP)


def _cell(grid, row, col, cell):
    x, y = _origin(row, col, cell)
    return grid[y:y + cell, x:x + cell]


def _fitted(image: np.ndarray, cell: int):
    """The image resized as a cell shows it (aspect kept, Lanczos), and its offset in the cell."""
    h, w = image.shape[:2]
    s = min(cell / w, cell / h)
    size = (round(w * s), round(h * s))
    pil = Image.fromarray(image).resize(size, Image.LANCZOS).convert("RGB")
    return np.asarray(pil), ((cell - size[0]) // 2, (cell - size[1]) // 2)


def _assert_cell_shows(grid, row, col, cell, image, atol=0):
    expected, (ox, oy) = _fitted(image, cell)
    region = _cell(grid, row, col, cell)
    inner = region[oy:oy + expected.shape[0], ox:ox + expected.shape[1]].astype(int)
    np.testing.assert_allclose(inner, expected.astype(int), atol=atol, rtol=0)
    # Outside the image, the neutral backdrop.
    mask = np.ones(region.shape[:2], bool)
    mask[oy:oy + expected.shape[0], ox:ox + expected.shape[1]] = False
    assert mask.any() and (region[mask] == C.CELL_BACKGROUND).all()


def test_grid_size_and_cells(data, tmp_path):
    pairs = C.pairs_from_folder(data)
    assert [p[0] for p in pairs] == list(STEMS)
    cell = 64
    out = C.compare_grid(pairs, ["average", "laplacian"], tmp_path / "grid.png", cell=cell, max_side=None)
    assert out == tmp_path / "grid.png"
    grid = read_image(out)
    rows, cols = 3, 2 + 2
    width = C.LABEL_WIDTH + C.GAP + cols * (cell + C.GAP)
    height = C.HEADER_HEIGHT + C.GAP + rows * (cell + C.GAP)
    assert grid.shape == (height, width, 3)
    assert C.grid_size(rows, cols, cell) == (width, height)
    assert C.cell_origin(2, 3, cell) == _origin(2, 3, cell)
    # Text in the header strip and in the label strip.
    assert (grid[:C.HEADER_HEIGHT, C.LABEL_WIDTH:] < 128).any()
    for r in range(rows):
        _, y = _origin(r, 0, cell)
        assert (grid[y:y + cell, :C.LABEL_WIDTH] < 128).any()
    for r, (_, ir_path, vis_path) in enumerate(pairs):
        ir, vis = read_image(ir_path), read_image(vis_path)
        _assert_cell_shows(grid, r, 0, cell, ir)                                  # infrared, grey
        _assert_cell_shows(grid, r, 1, cell, vis)                                 # visible as it is
        fused = ivfusion.fuse(ir_path, vis_path, method="average")
        assert fused.ndim == vis.ndim                                             # colour kept
        _assert_cell_shows(grid, r, 2, cell, fused)
        _assert_cell_shows(grid, r, 3, cell, ivfusion.fuse(ir_path, vis_path, method="laplacian"))
    colour = _cell(grid, 1, 1, cell).astype(int)
    assert (colour[..., 0] != colour[..., 1]).any()                              # colour visible shown in colour


def _halve(image):
    """Box filter halving both sides: the rounded mean of each 2x2 block."""
    h, w = image.shape[:2]
    blocks = image.reshape(h // 2, 2, w // 2, 2, *image.shape[2:]).astype(np.float64)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


def test_max_side_shrinks_pairs_before_fusing(data, tmp_path, monkeypatch):
    calls = []
    real_fuse = C.fuse

    def counting_fuse(ir, vis, **kwargs):
        calls.append((kwargs["method"], ir.shape, vis.shape))
        return real_fuse(ir, vis, **kwargs)

    monkeypatch.setattr(C, "fuse", counting_fuse)
    pairs = C.pairs_from_folder(data / "ir", data / "vi", limit=2)
    out = C.compare_grid(pairs, ["guided", "average"], tmp_path / "g.png", cell=48, max_side=26)
    # Each method once per pair, on the pair shrunk to a longer side of 26 (40x52 -> 20x26).
    assert [(m, ir[:2], vis[:2]) for m, ir, vis in calls] == [
        ("guided", (20, 26), (20, 26)), ("average", (20, 26), (20, 26))] * 2
    grid = read_image(out)
    for r, (_, ir_path, vis_path) in enumerate(pairs):
        # Independent route: a box filter halving 40x52 is the mean of 2x2 blocks, rounded.
        small = [_halve(read_image(p)) for p in (ir_path, vis_path)]
        _assert_cell_shows(grid, r, 0, 48, small[0])
        _assert_cell_shows(grid, r, 1, 48, small[1])
        _assert_cell_shows(grid, r, 3, 48, ivfusion.fuse(*small, method="average"))


def test_array_inputs_and_16bit_infrared(tmp_path, rng):
    ir = rng.integers(7000, 9000, (H, W)).astype(np.uint16)
    vis = smooth_image(rng, H, W, channels=3)
    out = C.compare_grid([("raw", ir, vis)], "max", tmp_path / "g.png", cell=32)
    grid = read_image(out)
    assert grid.shape == C.grid_size(1, 3, 32)[::-1] + (3,)
    lo, hi = int(ir.min()), int(ir.max())
    shown = np.round((ir.astype(np.float64) - lo) / (hi - lo) * 255).astype(np.uint8)  # own min..max
    _assert_cell_shows(grid, 0, 0, 32, shown, atol=2)


def test_labels_are_wrapped_not_lost(tmp_path, rng):
    long = "x" * 30 + "_middle_" + "y" * 40
    label = C._short_label(long)
    assert len(label) == C.MAX_LABEL_CHARS and label.startswith("xxx") and label.endswith("yyy") and "..." in label
    assert C._short_label("tno/Bosnia__LWIR_B") == "tno/Bosnia__LWIR_B"
    lines = C._wrap("tno/Athena_images__soldier_behind_smoke_2", 80, max_lines=10)
    assert "".join(lines) == "tno/Athena_images__soldier_behind_smoke_2" and len(lines) > 1
    assert len(C._wrap("a" * 200, 80, max_lines=2)) == 2 and C._wrap("a" * 200, 80, 2)[-1].endswith("...")


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(methods=["nope"]), ValueError, "methods: unknown method 'nope'"),
        (dict(methods=[]), ValueError, "methods: expected at least one"),
        (dict(methods=["average", "average"]), ValueError, "methods: 'average' given more than once"),
        (dict(pairs=[]), ValueError, "pairs: expected at least one"),
        (dict(pairs=[("only-label",)]), ValueError, r"pairs\[0\]: expected a \(label, ir, vis\)"),
        (dict(cell=8), ValueError, "cell: expected an int >= 16"),
        (dict(max_side=0), ValueError, "max_side: expected an int >= 1"),
        (dict(weights={"didfuse": "x.safetensors"}), ValueError, "weights: given for 'didfuse'"),
        (dict(weights={"average": "x.safetensors"}), ValueError, "weights: method 'average' is classical"),
        (dict(out="grid.unknownext"), ValueError, "out: unknown image extension"),
    ],
)
def test_argument_errors(change, error, message, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kwargs = dict(pairs=C.pairs_from_folder(data), methods=["average"], out=tmp_path / "g.png", cell=32)
    kwargs.update(change)
    with pytest.raises(error, match=message):
        C.compare_grid(kwargs.pop("pairs"), kwargs.pop("methods"), kwargs.pop("out"), **kwargs)
    assert not (tmp_path / "g.png").exists() and not list(tmp_path.glob(".g.*"))


def test_out_is_an_input_or_exists(data, tmp_path):
    pairs = C.pairs_from_folder(data)
    ir_path = pairs[1][1]
    before = ir_path.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"out: .* is an input image \(pairs\[1\] ir\)"):
            C.compare_grid(pairs, ["average"], data / "ir" / ".." / "ir" / ir_path.name, cell=32, overwrite=overwrite)
    assert ir_path.read_bytes() == before
    out = tmp_path / "grid.png"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="out: .* exists; pass overwrite=True"):
        C.compare_grid(pairs, ["average"], out, cell=32)
    assert out.read_bytes() == b"keep"
    C.compare_grid(pairs, ["average"], out, cell=32, overwrite=True)
    assert read_image(out).shape == C.grid_size(3, 3, 32)[::-1] + (3,)
    with pytest.raises(ValueError, match="pairs\\[0\\] \\('bad'\\): ir is 40x52 \\(HxW\\), vis is 20x26"):
        C.compare_grid([("bad", pairs[0][1], np.zeros((20, 26), np.uint8))], ["average"], tmp_path / "x.png")


def test_pairs_from_folder(data, tmp_path):
    assert [p[0] for p in C.pairs_from_folder(data, limit=2)] == list(STEMS[:2])
    assert C.pairs_from_folder(data / "ir", data / "vi") == C.pairs_from_folder(data)
    with pytest.raises(FileNotFoundError, match="has no ir/ sub-folder"):
        C.pairs_from_folder(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        C.pairs_from_folder(data, limit=0)


@pytest.fixture
def split_data(tmp_path, rng):
    """Two fake domains and a split JSON holding back some of their pairs."""
    for domain, stems in (("alpha", ("s1", "s2", "s3")), ("beta", ("t1", "t2"))):
        for stem in stems:
            for sub, ch in (("ir", 0), ("vi", 3)):
                write_image(tmp_path / "train" / domain / sub / f"{stem}.png", smooth_image(rng, 24, 32, channels=ch))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"name": "fake", "domains": {"alpha": ["s3", "s1"], "beta": ["t2"], "gamma": ["z"]}}))
    return split, [tmp_path / "train" / "alpha", tmp_path / "train" / "beta"]


def test_pairs_from_split(split_data):
    split, folders = split_data
    pairs = C.pairs_from_split(split, folders)
    assert [p[0] for p in pairs] == ["alpha/s3", "alpha/s1", "beta/t2"]
    assert pairs[0][1] == folders[0] / "ir" / "s3.png" and pairs[0][2] == folders[0] / "vi" / "s3.png"
    assert [p[0] for p in C.pairs_from_split(split, folders, domain="beta")] == ["beta/t2"]
    assert [p[0] for p in C.pairs_from_split(split, folders, limit=1)] == ["alpha/s3", "beta/t2"]
    with pytest.raises(ValueError, match="domain: split 'fake' has no domain 'delta'"):
        C.pairs_from_split(split, folders, domain="delta")
    with pytest.raises(ValueError, match="data_folders: no folder named 'gamma'"):
        C.pairs_from_split(split, folders, domain="gamma")


def test_cli_compare(data, split_data, tmp_path, capsys):
    out = tmp_path / "cli.png"
    args = ["compare", "average", "laplacian", "-o", str(out), "--cell", "40", "--max-side", "0"]
    assert main(args + ["--folder", str(data), "--limit", "2"]) == 0
    assert f"wrote {out} (2 pair(s) x 2 method(s))" in capsys.readouterr().out
    grid = read_image(out)
    assert grid.shape == C.grid_size(2, 4, 40)[::-1] + (3,)
    pairs = C.pairs_from_folder(data)
    _assert_cell_shows(grid, 1, 2, 40, ivfusion.fuse(pairs[1][1], pairs[1][2], method="average"))

    assert main(args + ["--ir-dir", str(data / "ir"), "--vis-dir", str(data / "vi")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ivfusion: error: output" in err and "pass --overwrite" in err
    assert main(args + ["--ir-dir", str(data / "ir"), "--vis-dir", str(data / "vi"), "--overwrite"]) == 0
    assert read_image(out).shape == C.grid_size(3, 4, 40)[::-1] + (3,)

    split, folders = split_data
    assert main(args + ["--overwrite", "--split", str(split), "--data", *map(str, folders), "--domain", "alpha"]) == 0
    assert read_image(out).shape == C.grid_size(2, 4, 40)[::-1] + (3,)

    n = ["-o", str(tmp_path / "n.png")]
    for argv, message in (
        (["average", "nope", "--folder", str(data)], "methods: unknown method 'nope'"),
        (["average", "--split", str(split)], "--split needs --data"),
        (["average"], "give the pairs"),
        (["average", "--folder", str(data), "--weights", "guided=w.safetensors"], "weights: given for 'guided'"),
    ):
        assert main(["compare", *argv, *n]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "n.png").exists()


def test_method_at_weight_columns_compare_weights_of_one_network(tmp_path):
    from safetensors.torch import save_file

    from ivfusion.models import create_model

    rng = np.random.default_rng(5)
    ir = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    vis = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"f3net_s{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in create_model("f3net").state_dict().items()}, str(path))
        files.append(path)
    out = C.compare_grid([("p", ir, vis)], [f"f3net@{files[0]}", f"f3net@{files[1]}"], tmp_path / "g.png", cell=32)
    grid = np.asarray(Image.open(out))
    cells = []
    for c in (2, 3):
        x, y = C.cell_origin(0, c, 32)
        cells.append(grid[y : y + 32, x : x + 32])
    assert not np.array_equal(cells[0], cells[1])  # two different weights, two different images
    expected = ivfusion.fuse(ir, vis, method="f3net", weights=str(files[1]))
    assert expected.shape == (24, 32)
    with pytest.raises(ValueError, match="METHOD@WEIGHT"):
        C.compare_grid([("p", ir, vis)], ["nope@x"], tmp_path / "h.png")
