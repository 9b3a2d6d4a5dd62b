"""What a new user meets first on the command line: ``list`` (default, plain descriptions, papers),
"did you mean", the size-mismatch hint, ``fuse --help``, ``weights list`` width, ``samples``,
``compare --pairs`` with progress, the progress defaults, and the swapped-inputs warning."""
import inspect
import io
import re
import sys
import warnings

import numpy as np
import pytest
import torch

import ivfusion
from ivfusion.cli import build_parser, main
from ivfusion.color import chroma_statistics, looks_like_photograph
from ivfusion.compare import pairs_from_folder
from ivfusion.fusion import InputOrderWarning
from ivfusion.io import write_image

from .conftest import smooth_image


def _lines(text):
    return text.rstrip("\n").split("\n")


# ------------------------------------------------------------------------------------ list


def test_list_marks_the_default_and_describes_in_plain_words(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in _lines(out) if line and line.split()[0] in ivfusion.list_methods()}
    assert set(rows) == set(ivfusion.list_methods())
    assert "(default)" in rows["refinefuse"] and sum("(default)" in r for r in rows.values()) == 1
    # The plain-words part comes before the paper's module names.
    assert out.index("mixes the two images at four scales") < out.index("SFIM")
    assert "smooth background and fine details" in out and "Fourier" in out
    assert max(len(line) for line in _lines(out)) <= 120


PAPERS = {  # method: (an author, a title word, venue, year, link)
    "didfuse": ("Z. Zhao", "DIDFuse: Deep Image Decomposition", "IJCAI", "2020", "https://doi.org/10.24963/ijcai.2020/135"),
    "f3net": ("W. Song", "Frequency-Spatial Feature Fusion Network", "Springer", "2023", "https://scholar.google.com/"),
    "fiscnet": ("N. Zheng", "Frequency Integration and Spatial Compensation", "Information Fusion", "2024",
                "https://doi.org/10.1016/j.inffus.2024.102359"),
    "refinefuse": ("C. Song", "RefineFuse: an end-to-end network", "Visual Intelligence", "2025",
                   "https://doi.org/10.1007/s44267-025-00087-w"),
    "guided": ("S. Li", "Image Fusion With Guided Filtering", "IEEE Transactions on Image Processing", "2013",
               "https://doi.org/10.1109/TIP.2013.2244222"),
}


def test_list_verbose_cites_every_paper_in_full(capsys):
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    papers = " ".join(out.split("papers:", 1)[1].split())  # unwrapped
    for method, parts in PAPERS.items():
        entry = papers.split(f"{method}: ", 1)[1]
        entry = re.split(r" (?:didfuse|f3net|fiscnet|refinefuse|laplacian|guided): ", entry)[0]
        for part in parts:
            assert part in entry, (method, part)
        assert ivfusion.method_info(method).paper_url in entry
    assert "params" in out and "2,031,856" in out  # RefineFuse's parameter count


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("typo, suggestion", [("refinefus", "refinefuse"), ("lapacian", "laplacian"),
                                              ("F3net", "f3net")])
def test_unknown_method_suggests_the_closest(typo, suggestion, capsys, tmp_path):
    ir, vis = ivfusion.data.sample_pair("day", as_path=True)
    assert main(["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "-m", typo]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ivfusion: error: unknown method {typo!r}; did you mean {suggestion!r}?")
    assert err.count("\n") == 1 and "available: didfuse, f3net" in err
    with pytest.raises(ValueError, match=f"did you mean {suggestion!r}"):
        ivfusion.fuse(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), method=typo)


def test_nothing_close_gets_no_suggestion():
    with pytest.raises(ValueError, match=r"^unknown method 'xyz'; available: "):
        ivfusion.method_info("xyz")


def test_size_mismatch_names_the_cli_options(tmp_path, rng, capsys):
    write_image(tmp_path / "ir.png", smooth_image(rng, 15, 22))
    write_image(tmp_path / "vis.png", smooth_image(rng, 30, 44))
    args = ["fuse", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "o.png"), "-m", "max"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "pass --resize ir_to_vis or --resize vis_to_ir" in err and "resize='" not in err
    assert main(args + ["--resize", "ir_to_vis"]) == 0
    # In batch mode the per-pair failure says the same.
    for sub, name, img in (("ir", "a.png", smooth_image(rng, 15, 22)), ("vi", "a.png", smooth_image(rng, 30, 44))):
        write_image(tmp_path / sub / name, img)
    capsys.readouterr()
    assert main(["fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"),
                 "--out-dir", str(tmp_path / "out"), "-m", "max", "--no-progress"]) == 1
    assert "error: a: ir and vis differ in size" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ help


def _subparser(name):
    parser = build_parser()
    return next(a for a in parser._actions if hasattr(a, "choices") and a.choices and name in a.choices).choices[name]


def test_fuse_help_shows_every_default_and_examples(capsys):
    fuse = _subparser("fuse")
    for action in fuse._actions:
        if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.dest != "help":
            assert "default" in action.help, action.dest
    with pytest.raises(SystemExit):
        main(["fuse", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: refinefuse)" in text and "(default: 32)" in text and "(default: .png)" in text
    assert text.count("ivfusion fuse ") >= 2  # examples
    assert "ivfusion fuse $(ivfusion samples night) -o fused.png" in text


def test_tile_size_help_says_what_the_cpu_does():
    help_text = " ".join(next(a for a in _subparser("fuse")._actions if a.dest == "tile_size").help.split())
    # On the CPU a network runs in one pass unless it would not fit in memory (fusion._cpu_tile_size).
    assert "on the CPU one pass over the whole image, in tiles only when that pass would not fit" in help_text
    assert "on CUDA the largest tile that fits" in help_text
    assert next(a for a in _subparser("fuse-video")._actions if a.dest == "tile_size").help == \
        next(a for a in _subparser("fuse")._actions if a.dest == "tile_size").help


def test_the_cpu_really_tiles_only_when_memory_is_short(monkeypatch):
    from ivfusion import fusion

    monkeypatch.setattr(fusion, "available_cpu_bytes", lambda: 64 * 2**30)
    assert fusion._cpu_tile_size("refinefuse", (1, 1, 480, 640), 8) is None
    monkeypatch.setattr(fusion, "available_cpu_bytes", lambda: 2 * 2**30)
    side = fusion._cpu_tile_size("refinefuse", (1, 1, 4096, 4096), 8)
    assert side is not None and side < 4096


# ------------------------------------------------------------------------------------ weights, samples


def test_weights_list_fits_120_columns_licence_under_verbose(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in _lines(out)) <= 120
    assert "non-commercial research only" not in out and "NON-COMMERCIAL" in out
    assert "refinefuse.ivif" in out and "bundled" in out
    assert main(["weights", "list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in _lines(out)) <= 120
    assert out.count("licence: weights inherit the terms of their training data") == 4
    assert "non-commercial research only" in " ".join(out.split())


def test_samples_command(capsys):
    assert main(["samples"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ivfusion.data.list_samples()) and "MIT" in out
    assert main(["samples", "night"]) == 0
    ir, vis = capsys.readouterr().out.split()
    assert (ir, vis) == tuple(str(p) for p in ivfusion.data.sample_pair("night", as_path=True))
    assert main(["samples", "nigth"]) == 1
    assert "did you mean 'night'?" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ compare, progress


@pytest.fixture
def stems_folder(tmp_path, rng):
    for stem in ("carLight", "kettle", "bench"):
        write_image(tmp_path / "data" / "ir" / f"{stem}.png", smooth_image(rng, 24, 32))
        write_image(tmp_path / "data" / "vi" / f"{stem}.png", smooth_image(rng, 24, 32, channels=3))
    return tmp_path / "data"


def test_compare_takes_pair_stems(stems_folder, tmp_path, capsys):
    assert [p[0] for p in pairs_from_folder(stems_folder, stems=["kettle", "carLight"])] == ["kettle", "carLight"]
    out = tmp_path / "grid.png"
    assert main(["compare", "average", "max", "-o", str(out), "--folder", str(stems_folder),
                 "--pairs", "carLight", "kettle", "--cell", "32"]) == 0
    assert "2 pair(s) x 2 method(s)" in capsys.readouterr().out
    assert main(["compare", "average", "-o", str(tmp_path / "g2.png"), "--folder", str(stems_folder),
                 "--pairs", "kettel"]) == 1
    assert "unknown pair 'kettel'; did you mean 'kettle'?" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_compare_shows_progress_on_a_terminal(stems_folder, tmp_path, monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    ivfusion.compare_grid(pairs_from_folder(stems_folder), ["average", "max"], tmp_path / "g.png", cell=32)
    assert "fusing" in term.getvalue() and "6/6" in term.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    ivfusion.compare_grid(pairs_from_folder(stems_folder), ["average"], tmp_path / "q.png", cell=32, progress=False)
    assert quiet.getvalue() == ""


def test_progress_defaults_agree():
    defaults = {f.__name__: inspect.signature(f).parameters["progress"].default
                for f in (ivfusion.fuse_dir, ivfusion.fuse_video, ivfusion.compare_grid)}
    assert set(defaults.values()) == {True}, defaults


# ------------------------------------------------------------------------------------ swapped inputs


def _palette(gray, stops):
    x = np.linspace(0, 1, len(stops))
    s = np.asarray(stops, float)
    lut = np.stack([np.interp(np.linspace(0, 1, 256), x, s[:, c]) for c in range(3)], -1).round().astype(np.uint8)
    return lut[gray]


def _fuse_warnings(ir, vis):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ivfusion.fuse(ir, vis, method="average")
    return [w for w in caught if issubclass(w.category, InputOrderWarning)]


def test_swapped_inputs_warn():
    ir, vis = ivfusion.data.sample_pair("day")
    (w,) = _fuse_warnings(vis, ir)  # a colour photograph in the infrared slot
    assert "ir and vis may be swapped" in str(w.message) and w.filename == __file__
    night_ir, night_vis = ivfusion.data.sample_pair("night")
    assert len(_fuse_warnings(night_vis, night_vis)) == 1  # colour in both slots


def test_pseudo_colour_infrared_does_not_warn():
    assert _fuse_warnings(*ivfusion.data.sample_pair("mri_pet")) == []  # PET in the ir slot: medical convention
    ir, vis = ivfusion.data.sample_pair("night")
    assert _fuse_warnings(ir, vis) == []
    ironbow = _palette(ir, [(0, 0, 0), (32, 0, 140), (204, 0, 119), (255, 165, 0), (255, 255, 200)])
    jet = _palette(ir, [(0, 0, 128), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (128, 0, 0)])
    assert _fuse_warnings(ironbow, vis) == [] and _fuse_warnings(jet, vis) == []


def test_chroma_statistics_by_hand():
    # Chroma a function of luma: fully explained. Two colours at one luma: not explained at all.
    ramp = torch.linspace(0, 1, 16).repeat(8, 1)  # 16 colours, each in its own luma bin
    palette = torch.stack([ramp, ramp ** 2, 1 - ramp])
    assert chroma_statistics(palette)[0] == pytest.approx(1.0, abs=1e-6)
    d_green = 0.1 * 0.299 / 0.587  # +0.1 red and -d_green green keep the luma
    checker = torch.zeros(3, 8, 8)
    checker[:, ::2] = torch.tensor([0.61, 0.51 - d_green, 0.51])[:, None, None]
    checker[:, 1::2] = torch.tensor([0.41, 0.51 + d_green, 0.51])[:, None, None]
    luma = 0.299 * checker[0] + 0.587 * checker[1] + 0.114 * checker[2]
    assert torch.allclose(luma, torch.tensor(0.51), atol=1e-6)  # both colours have one luma
    explained, rms = chroma_statistics(checker)
    assert explained == pytest.approx(0.0, abs=1e-6)
    cr = 0.5 + (checker[0] - luma) / 1.402
    cb = 0.5 + (checker[2] - luma) / 1.772
    expected_rms = float(torch.cat([(cb - cb.mean()).flatten(), (cr - cr.mean()).flatten()]).pow(2).mean().sqrt())
    assert rms == pytest.approx(expected_rms, rel=1e-5)
    assert looks_like_photograph(checker) == (expected_rms < 0.06)
    assert chroma_statistics(torch.full((3, 4, 4), 0.3)) == (1.0, 0.0)  # grey: no chroma at all
