"""The ivfusion command line: fuse (single and batch), list, errors, atomic writes."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ivfusion
from ivfusion.cli import main
from ivfusion.io import read_image, write_image

from .conftest import REPO_ROOT, signal_at_marker, smooth_image


def test_fuse_single_pair(pair_files, tmp_path, capsys):
    ir, vis = pair_files
    out = tmp_path / "fused.png"
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "--method", "laplacian", "-O", "levels=3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    np.testing.assert_array_equal(read_image(out), ivfusion.fuse(ir, vis, method="laplacian", levels=3))


def test_fuse_refuses_to_overwrite_without_flag(pair_files, tmp_path, capsys):
    ir, vis = pair_files
    out = tmp_path / "fused.png"
    out.write_bytes(b"keep")
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "-m", "average"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass --overwrite or --skip-existing" in err
    assert out.read_bytes() == b"keep"
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "-m", "average", "--skip-existing"]) == 0
    assert out.read_bytes() == b"keep"
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "-m", "average", "--overwrite"]) == 0
    assert read_image(out).shape == (30, 44, 3)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "ivfusion: error: ir: no such file"),
        ("unreadable", "ivfusion: error: ir: cannot read"),
        ("mismatch", "ivfusion: error: ir and vis differ in size: ir is 15x22 (HxW), vis is 30x44"),
        ("method", "ivfusion: error: unknown method 'nope'"),
        ("option", "ivfusion: error: method 'average' does not accept option(s) rule"),
    ],
)
def test_fuse_errors_are_one_line_and_nonzero(case, message, pair_files, tmp_path, rng, capsys):
    ir, vis = pair_files
    args = ["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "-m", "average"]
    if case == "missing":
        args[1] = str(tmp_path / "nope.png")
    elif case == "unreadable":
        bad = tmp_path / "bad.png"
        bad.write_text("garbage")
        args[1] = str(bad)
    elif case == "mismatch":
        small = tmp_path / "small.png"
        write_image(small, smooth_image(rng, 15, 22))
        args[1] = str(small)
    elif case == "method":
        args[-1] = "nope"
    elif case == "option":
        args += ["-O", "rule=sum"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fuse", "--resize", "sideways"])
    assert exc.value.code == 2
    assert main(["fuse", "a.png"]) == 1  # incomplete single-pair mode
    assert "single-pair mode needs IR, VIS and -o OUT" in capsys.readouterr().err


def test_fuse_batch_mode(tmp_path, rng, capsys):
    ir_dir, vis_dir, out_dir = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    for s in ["p1", "p2", "lonely"]:
        write_image(ir_dir / f"{s}.png", smooth_image(rng, 20, 24))
    for s in ["p1", "p2"]:
        write_image(vis_dir / f"{s}.png", smooth_image(rng, 20, 24, channels=3))
    args = ["fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "--out-dir", str(out_dir), "-m", "max"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "wrote 2, skipped 0, failed 0, unmatched 1" in captured.out
    assert "no visible image for lonely.png" in captured.err
    assert sorted(p.name for p in out_dir.iterdir()) == ["p1.png", "p2.png"]
    assert main(args) == 1  # outputs exist now
    err = capsys.readouterr().err
    assert "2 output(s) exist already (p1.png, p2.png); pass --skip-existing or --overwrite" in err
    assert main(args + ["--skip-existing"]) == 0
    assert "skipped 2" in capsys.readouterr().out


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ivfusion.list_methods():
        assert name in out


def test_list_verbose_shows_parameters_and_gflops(capsys):
    assert main(["list", "--verbose"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    # MODELS.md: parameters, and GFLOPs at 640x480 = 2 x MACs (FFTs not counted); FISCNet's CDC runs as one
    # convolution (230.6 in MODELS.md, less 9 x 2,816 MACs/px: test_fiscnet.py)
    for name, params, gflops in [("didfuse", "260,935", "227.9"), ("fiscnet", "324,290", "215.0"),
                                 ("f3net", "140,283", "85.2"), ("refinefuse", "2,031,856", "112.0")]:
        assert params in lines[name].split() and gflops in lines[name].split()
    assert "papers:" in lines


def test_python_dash_m_entry_point(pair_files, tmp_path):
    ir, vis = pair_files
    out = tmp_path / "m.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ivfusion", "fuse", str(ir), str(vis), "-o", str(out), "-m", "guided"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_image(out).shape == (30, 44, 3)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from PIL import Image

    def slow_save(self, fp, format=None, **kw):
        fp.write(b"\\x89PNG\\r\\n\\x1a\\n partial bytes")
        fp.flush()
        print("WRITING", flush=True)
        time.sleep(120)

    Image.Image.save = slow_save
    from ivfusion.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_interrupted_write_leaves_no_partial_output(pair_files, tmp_path, sig):
    ir, vis = pair_files
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "fused.png"
    # WRITING: the encoder is midway through the file
    proc = signal_at_marker(_SLOW_WRITER, ["fuse", ir, vis, "-o", out, "-m", "average"], "WRITING", sig)
    assert proc.returncode != 0
    assert not out.exists()
    leftovers = list(out_dir.iterdir())
    if sig == signal.SIGTERM:
        assert leftovers == []  # cleanup ran
    else:  # SIGKILL cannot be caught: only a hidden temporary may remain, never the output name
        assert all(p.name.startswith(".fused.") and ".part" in p.name for p in leftovers)


def test_fuse_never_writes_over_an_input_even_with_overwrite(pair_files, tmp_path, capsys):
    ir, vis = pair_files
    before = vis.read_bytes()
    link = tmp_path / "vis_link.png"
    link.symlink_to(vis)
    hard = tmp_path / "vis_hard.png"
    os.link(vis, hard)
    for target in (vis, link, hard, tmp_path / "sub" / ".." / vis.name):
        assert main(["fuse", str(ir), str(vis), "-o", str(target), "-m", "average", "--overwrite"]) == 1
        assert "VIS input" in capsys.readouterr().err
    assert main(["fuse", str(ir), str(vis), "-o", str(ir), "-m", "average", "--overwrite"]) == 1
    assert "IR input" in capsys.readouterr().err
    assert vis.read_bytes() == before


def test_fuse_dir_never_writes_over_an_input(tmp_path, rng, capsys):
    for sub in ("ir", "vi"):
        for stem in ("a", "b"):
            write_image(tmp_path / sub / f"{stem}.png", smooth_image(rng, 20, 24))
    before = (tmp_path / "vi" / "a.png").read_bytes()
    with pytest.raises(ValueError, match="over its input"):
        ivfusion.fuse_dir(tmp_path / "ir", tmp_path / "vi", tmp_path / "vi", "average", existing="overwrite")
    code = main(["fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"), "--out-dir",
                 str(tmp_path / "vi"), "-m", "average", "--overwrite", "--no-progress"])
    assert code == 1 and "--out-dir" in capsys.readouterr().err
    assert (tmp_path / "vi" / "a.png").read_bytes() == before
