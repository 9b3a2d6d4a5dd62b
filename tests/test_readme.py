"""The README's Python examples run as written (in a scratch folder holding the files they name)."""
import re

import pytest
import torch

from .conftest import REPO_ROOT, smooth_image
from ivfusion.io import write_image

README = REPO_ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def scratch(tmp_path, monkeypatch, rng):
    """The files the README's examples refer to."""
    write_image(tmp_path / "ir.png", smooth_image(rng, 48, 64))
    write_image(tmp_path / "fused.png", smooth_image(rng, 48, 64, channels=3))
    write_image(tmp_path / "vis.jpg", smooth_image(rng, 48, 64, channels=3))
    write_image(tmp_path / "pet.png", smooth_image(rng, 48, 64, channels=3))
    write_image(tmp_path / "mri.png", smooth_image(rng, 48, 64))
    for sub, ch in (("ir", 0), ("vi", 3)):
        for stem in ("0001", "0002"):
            write_image(tmp_path / "data" / sub / f"{stem}.png", smooth_image(rng, 48, 64, channels=ch))
    # A weight file of one's own (the README loads it by path): random DIDFuse weights.
    from safetensors.torch import save_file

    import ivfusion

    torch.manual_seed(0)
    save_file(ivfusion.create_model("didfuse").state_dict(), str(tmp_path / "my_didfuse.safetensors"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def _write_videos(folder, rng, frames=4):
    """Tiny ir.mp4 / vis.mp4 for the video examples (PyAV, the [video] extra)."""
    av = pytest.importorskip("av")
    for name, channels in (("ir.mp4", 0), ("vis.mp4", 3)):
        with av.open(str(folder / name), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            for i in range(frames):
                f = av.VideoFrame.from_ndarray(smooth_image(rng, 48, 64, channels=channels),
                                               format="rgb24" if channels else "gray")
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, scratch, rng):
    if "fuse_video" in BLOCKS[index]:
        _write_videos(scratch, rng)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})


def test_quick_start_is_five_lines_and_fuses_a_sample(tmp_path, monkeypatch):
    quick = BLOCKS[0]
    assert len([line for line in quick.splitlines() if line.strip()]) <= 5
    assert "sample_pair(" in quick and "save_image(" in quick
    monkeypatch.chdir(tmp_path)
    exec(compile(quick, "README.md[quick start]", "exec"), {"__name__": "__readme__"})
    import ivfusion
    from ivfusion.io import read_image

    written = read_image(tmp_path / "fused.png")
    assert written.shape == (480, 640, 3)
    assert (written == ivfusion.fuse(*ivfusion.data.sample_pair("night"))).all()


def test_readme_is_short_and_self_contained():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "```bash\npip install -e \".[test]\"\npython -m pytest -q\n```" in text  # CI runs this command
    assert "../shared/design" not in text and "issue 16" not in text.lower()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) + re.findall(r'<img src="([^"]+)"', text):
        if not target.startswith(("http://", "https://")):
            assert (REPO_ROOT / target).exists(), target
    assert "non-commercial" in text.lower() and "guided" in text
