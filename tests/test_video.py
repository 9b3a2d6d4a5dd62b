"""ivfusion.fuse_video and `ivfusion fuse-video` on small synthetic videos encoded here with PyAV."""
import sys

import numpy as np
import pytest

av = pytest.importorskip("av")

import ivfusion  # noqa: E402
import ivfusion.video as video  # noqa: E402
from ivfusion.video import _fuse, _mapping, _sources  # noqa: E402
from ivfusion.cli import main  # noqa: E402
from ivfusion.io import write_image  # noqa: E402

H, W, N = 48, 64, 12
LOSSLESS = dict(crf=0, pix_fmt="yuv444p")  # x264 lossless up to the RGB <-> YUV rounding


# ------------------------------------------------------------------------------------ helpers


def write_video(path, frames, rate=25, codec="libx264", pix_fmt="yuv444p", fmt="rgb24", options=None):
    """Encode numpy frames (uint8 RGB, or uint16 grey with fmt='gray16le') with pts 0, 1, 2 ..."""
    options = {"crf": "0"} if options is None and codec == "libx264" else (options or {})
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        s.options = options
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format=fmt)
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def read_video(path, fmt="rgb24"):
    """(average rate, stream info, [(seconds, array), ...]) of the first video stream."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "frames": s.frames,
                "size": (s.codec_context.height, s.codec_context.width)}
        frames = [(float(f.pts * s.time_base), f.to_ndarray(format=fmt)) for f in c.decode(s)]
        return s.average_rate, info, frames


def ir_frames(n=N, phase=0.0):
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for i in range(n):
        g = np.clip(120 + 70 * np.sin(xx / 7 + i / 3 + phase) + 30 * np.cos(yy / 5), 0, 255).astype(np.uint8)
        g[8 + i: 16 + i, 40:48] = 250  # a warm target moving down
        out.append(np.repeat(g[..., None], 3, axis=2))
    return out


def vis_frames(n=N):
    yy, xx = np.mgrid[0:H, 0:W]
    return [np.stack([np.clip(100 + 80 * np.sin((xx + 2 * i) / 9), 0, 255),
                      np.clip(120 + 50 * np.cos(yy / 6 + i / 4), 0, 255),
                      np.clip(90 + 40 * np.sin((xx + yy) / 8), 0, 255)], axis=-1).astype(np.uint8)
            for i in range(n)]


def thermal_ramp(n=N):
    """16-bit frames: a fixed texture on a level that rises 150 counts per frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    texture = 300 * np.sin(xx / 6) + 200 * np.cos(yy / 4)
    return [np.clip(7000 + 150 * i + texture, 0, 65535).astype(np.uint16) for i in range(n)]


def leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "ir": write_video(d / "ir.mp4", ir_frames()),
        "vis": write_video(d / "vis.mp4", vis_frames()),
        "thermal": write_video(d / "thermal.mkv", thermal_ramp(), codec="ffv1", pix_fmt="gray16le",
                               fmt="gray16le"),
        "vis_static": write_video(d / "vis_static.mp4", vis_frames(1) * N),
        "vis20": write_video(d / "vis20.mp4", vis_frames(), rate=20),
        "vis8": write_video(d / "vis8.mp4", vis_frames(8)),
        "ir10": write_video(d / "ir10.mp4", ir_frames(4), rate=10),
        "ir_ffv1_short": write_video(d / "ir_short.mkv", ir_frames(8), codec="ffv1", pix_fmt="yuv444p"),
    }


def assert_matches_fuse(out_frames, ir_list, vis_list, method="guided", tol=3.0, max_tol=16, **kw):
    assert len(out_frames) == len(ir_list) == len(vis_list)
    for i, ((_, got), ir, vis) in enumerate(zip(out_frames, ir_list, vis_list)):
        want = ivfusion.fuse(ir, vis, method=method, device="cpu", **kw)
        assert got.shape == want.shape
        err = np.abs(got.astype(int) - want.astype(int))
        assert err.mean() < tol, f"frame {i}: mean abs error {err.mean():.2f}"
        assert err.max() <= max_tol, f"frame {i}: max abs error {err.max()}"


# ------------------------------------------------------------------------------------ content and timing


def test_frames_timing_and_content_match_fuse(clips, tmp_path):
    out = tmp_path / "fused.mp4"
    report = ivfusion.fuse_video(clips["ir"], clips["vis"], out, method="guided", batch_size=5,
                                 device="cpu", progress=False, **LOSSLESS)
    assert report.output == out and report.frames == N and report.fps == 25.0
    assert report.size == (H, W) and report.codec == "libx264" and report.ir_range is None
    assert report.seconds > 0 and report.throughput > 0
    rate, info, frames = read_video(out)
    _, _, ir_in = read_video(clips["ir"])
    _, _, vis_in = read_video(clips["vis"])
    assert rate == 25 and info["frames"] == N and len(frames) == N
    assert [t for t, _ in frames] == pytest.approx([t for t, _ in vis_in], abs=1e-6)
    assert_matches_fuse(frames, [a for _, a in ir_in], [a for _, a in vis_in])
    assert leftovers(tmp_path, {"fused.mp4"}) == []


def test_default_encoder_is_h264_yuv420p_at_input_rate(clips, tmp_path):
    out = tmp_path / "fused.mp4"
    report = ivfusion.fuse_video(clips["ir"], clips["vis"], out, method="average", progress=False)
    rate, info, frames = read_video(out)
    assert (info["codec"], info["pix_fmt"], rate, len(frames)) == ("h264", "yuv420p", 25, N)
    assert report.codec == video.DEFAULT_CODEC


def test_frames_range_and_backpressure(clips, tmp_path):
    out = tmp_path / "part.mp4"
    report = ivfusion.fuse_video(clips["ir"], clips["vis"], out, method="laplacian", frames=(3, 9),
                                 batch_size=1, queue_size=1, progress=False, **LOSSLESS)
    assert report.frames == 6
    _, _, frames = read_video(out)
    _, _, ir_in = read_video(clips["ir"])
    _, _, vis_in = read_video(clips["vis"])
    assert [t for t, _ in frames] == pytest.approx([i / 25 for i in range(6)], abs=1e-6)
    assert_matches_fuse(frames, [a for _, a in ir_in[3:9]], [a for _, a in vis_in[3:9]], method="laplacian")
    with pytest.raises(ValueError, match="no frames to fuse in frames 50..end"):
        ivfusion.fuse_video(clips["ir"], clips["vis"], tmp_path / "none.mp4", method="average", frames=(50, None))
    assert not (tmp_path / "none.mp4").exists()


# ------------------------------------------------------------------------------------ 16-bit thermal


def test_thermal_window_is_constant_so_a_ramp_stays_a_ramp(clips, tmp_path):
    # A static visible scene, so that only the infrared level changes from frame to frame.
    out = tmp_path / "thermal.mp4"
    # The window spans all frames (min..max), so no frame clips.
    report = ivfusion.fuse_video(clips["thermal"], clips["vis_static"], out, method="guided", progress=False,
                                 ir_window_frames=N, ir_percentiles=(0, 100), **LOSSLESS)
    th = thermal_ramp()
    assert report.ir_range == (float(th[0].min()), float(th[-1].max()))
    _, _, frames = read_video(out)
    _, _, th_in = read_video(clips["thermal"], fmt="gray16le")
    _, _, vis_in = read_video(clips["vis_static"])
    assert th_in[0][1].dtype == np.uint16
    assert_matches_fuse(frames, [a for _, a in th_in], [a for _, a in vis_in], ir_range=report.ir_range)
    means = np.array([a.mean() for _, a in frames])
    assert np.all(np.diff(means) > 0.5), means  # the scene warms up: the fused frames brighten
    # Per-frame normalisation (ir_window_frames=0, as fuse() does for one image) flattens the ramp.
    flat = tmp_path / "flat.mp4"
    assert ivfusion.fuse_video(clips["thermal"], clips["vis_static"], flat, method="guided", progress=False,
                               ir_window_frames=0, **LOSSLESS).ir_range is None
    flat_means = np.array([a.mean() for _, a in read_video(flat)[2]])
    assert np.ptp(flat_means) < 0.25 * np.ptp(means)


def test_thermal_window_from_first_frames_and_fixed_range(clips, tmp_path):
    r = ivfusion.fuse_video(clips["thermal"], clips["vis"], tmp_path / "d.mp4", method="average", progress=False)
    stack = np.stack(thermal_ramp())  # default: percentiles 0.5 / 99.5 of the first 30 (here all 12) frames
    assert r.ir_range == pytest.approx(tuple(np.percentile(stack, (0.5, 99.5))), abs=2)
    # Estimated from the first 3 frames only: later, warmer frames clip at the window's top.
    r = ivfusion.fuse_video(clips["thermal"], clips["vis"], tmp_path / "a.mp4", method="average",
                            progress=False, ir_window_frames=3, ir_percentiles=(0, 100))
    first3 = np.stack(thermal_ramp()[:3])
    assert r.ir_range == (float(first3.min()), float(first3.max()))
    r = ivfusion.fuse_video(clips["thermal"], clips["vis"], tmp_path / "b.mp4", method="average",
                            progress=False, ir_range=(6000, 10000))
    assert r.ir_range == (6000.0, 10000.0)


def test_image_sequences_16bit_natural_order_fps_and_resize(tmp_path):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    vis_small = [v[::2, ::2] for v in vis_frames()]
    for i, (t, v) in enumerate(zip(thermal_ramp(), vis_small), start=1):
        write_image(ir_dir / f"f{i}.png", t)  # f1 .. f12: natural order, not f1, f10, f11, f12, f2 ...
        write_image(vis_dir / f"v{i}.png", v)
    out = tmp_path / "seq.mkv"
    with pytest.raises(ValueError, match="ir and vis differ in size: ir is 48x64 .HxW., vis is 24x32"):
        ivfusion.fuse_video(ir_dir, vis_dir, out, method="average")
    report = ivfusion.fuse_video(ir_dir, vis_dir, out, method="average", resize="vis_to_ir", fps=10,
                                 frames=(2, None), ir_window_frames=N, progress=False, **LOSSLESS)
    assert (report.frames, report.fps, report.size) == (N - 2, 10.0, (H, W))
    rate, _, frames = read_video(out)
    assert rate == 10 and [t for t, _ in frames] == pytest.approx([i / 10 for i in range(N - 2)], abs=1e-6)
    assert_matches_fuse(frames, thermal_ramp()[2:], vis_small[2:], method="average",
                        ir_range=report.ir_range, resize="vis_to_ir")
    assert np.all(np.diff([a.mean() for _, a in frames]) > 0)
    assert leftovers(tmp_path, {"ir", "vi", "seq.mkv"}) == []


def test_video_with_image_sequence_takes_the_videos_rate(clips, tmp_path):
    vis_dir = tmp_path / "vi"
    for i, v in enumerate(vis_frames()):
        write_image(vis_dir / f"{i:03d}.png", v)
    report = ivfusion.fuse_video(clips["ir"], vis_dir, tmp_path / "mix.mp4", method="max", progress=False)
    assert (report.frames, report.fps) == (N, 25.0)
    with pytest.raises(ValueError, match="fps: applies to image-sequence inputs"):
        ivfusion.fuse_video(clips["ir"], clips["vis"], tmp_path / "x.mp4", method="max", fps=10)


# ------------------------------------------------------------------------------------ pairing


def test_strict_rejects_rate_and_count_mismatch(clips, tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(ValueError, match=r"differ in frame rate: ir 25 fps, vis 20 fps; pass sync='nearest'"):
        ivfusion.fuse_video(clips["ir"], clips["vis20"], out, method="average")
    with pytest.raises(ValueError, match="differ in frame count: ir has 12 frames, vis has 8"):
        ivfusion.fuse_video(clips["ir"], clips["vis8"], out, method="average")
    # Matroska records no frame count: the mismatch shows while decoding, and still no output is left.
    with pytest.raises(ValueError, match="differ in frame count: ir ended after 8 frames, vis has more"):
        ivfusion.fuse_video(clips["ir_ffv1_short"], clips["vis"], out, method="average", progress=False)
    assert leftovers(tmp_path, set()) == []


def test_sync_index_pairs_by_position_up_to_the_shorter(clips, tmp_path):
    out = tmp_path / "o.mp4"
    report = ivfusion.fuse_video(clips["ir"], clips["vis20"], out, method="average", sync="index",
                                 progress=False, **LOSSLESS)
    assert (report.frames, report.fps) == (N, 20.0)
    report = ivfusion.fuse_video(clips["ir"], clips["vis8"], out, method="average", sync="index",
                                 overwrite=True, progress=False, **LOSSLESS)
    assert report.frames == 8
    _, _, frames = read_video(out)
    _, _, ir_in = read_video(clips["ir"])
    _, _, vis_in = read_video(clips["vis8"])
    assert_matches_fuse(frames, [a for _, a in ir_in[:8]], [a for _, a in vis_in], method="average")


def test_sync_nearest_pairs_by_presentation_time(clips, tmp_path):
    # Infrared: 4 frames at 10 fps (0.0 .. 0.3 s, shown until 0.4 s); visible: 12 frames at 25 fps.
    out = tmp_path / "o.mp4"
    with pytest.raises(ValueError, match="differ in frame rate"):
        ivfusion.fuse_video(clips["ir10"], clips["vis"], out, method="average")
    report = ivfusion.fuse_video(clips["ir10"], clips["vis"], out, method="average", sync="nearest",
                                 progress=False, **LOSSLESS)
    assert (report.frames, report.fps) == (10, 25.0)  # visible frames at 0.00 .. 0.36 s
    rate, _, frames = read_video(out)
    _, _, ir_in = read_video(clips["ir10"])
    _, _, vis_in = read_video(clips["vis"])
    ir_times = np.array([t for t, _ in ir_in])
    nearest = [int(np.argmin(np.abs(ir_times - t))) for t, _ in vis_in[:10]]
    assert nearest == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]
    assert rate == 25 and [t for t, _ in frames] == pytest.approx([t for t, _ in vis_in[:10]], abs=1e-6)
    assert_matches_fuse(frames, [ir_in[j][1] for j in nearest], [a for _, a in vis_in[:10]], method="average")


# ------------------------------------------------------------------------------------ atomic output


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_mid_way_leaves_no_output_and_no_temp_file(clips, tmp_path, monkeypatch, error):
    calls = []
    real_run = _fuse._run

    def failing_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real_run(*args, **kwargs)

    monkeypatch.setattr(_fuse, "_run", failing_run)
    out = tmp_path / "fused.mp4"
    with pytest.raises(type(error)):
        ivfusion.fuse_video(clips["ir"], clips["vis"], out, method="average", batch_size=2, progress=False)
    assert len(calls) == 2 and leftovers(tmp_path, set()) == []
    # Replacing an existing file: a failing run leaves the old one as it was.
    out.write_bytes(b"old video")
    calls.clear()
    with pytest.raises(type(error)):
        ivfusion.fuse_video(clips["ir"], clips["vis"], out, method="average", batch_size=2, overwrite=True,
                            progress=False)
    assert out.read_bytes() == b"old video" and leftovers(tmp_path, {"fused.mp4"}) == []


def test_unreadable_frame_mid_way_fails_cleanly(tmp_path):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    for i, (a, v) in enumerate(zip(ir_frames(), vis_frames())):
        write_image(ir_dir / f"{i:02d}.png", a)
        write_image(vis_dir / f"{i:02d}.png", v)
    (vis_dir / "07.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="vis frame 07.png: cannot read"):
        ivfusion.fuse_video(ir_dir, vis_dir, tmp_path / "o.mp4", method="average", batch_size=2, progress=False)
    assert leftovers(tmp_path, {"ir", "vi"}) == []


def test_refuses_to_write_over_an_input_or_an_existing_file(clips, tmp_path):
    before = clips["vis"].read_bytes()
    with pytest.raises(ValueError, match="is the vis input"):
        ivfusion.fuse_video(clips["ir"], clips["vis"], clips["vis"], method="average", overwrite=True)
    assert clips["vis"].read_bytes() == before
    out = tmp_path / "o.mp4"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        ivfusion.fuse_video(clips["ir"], clips["vis"], out, method="average")
    assert out.read_bytes() == b"keep"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sync="closest"), "sync must be one of"),
        (dict(frames=(5, 2)), "frames: stop must be greater than start"),
        (dict(batch_size=0), "batch_size must be an int >= 1"),
        (dict(ir_percentiles=(99, 1)), "ir_percentiles: need 0 <= low < high <= 100"),
        (dict(codec="nope"), "codec: no encoder named 'nope'"),
        (dict(codec="mpeg4", crf=20), "crf: codec 'mpeg4' has no constant rate factor"),
        (dict(pix_fmt="rgb24"), "pix_fmt: libx264 does not encode 'rgb24'"),
        (dict(rule="sum"), "method 'average' does not accept option"),
        (dict(ir_range=(5, 1)), "ir: value range needs lo < hi"),
    ],
)
def test_bad_options_raise_before_writing(clips, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ivfusion.fuse_video(clips["ir"], clips["vis"], tmp_path / "o.mp4", method="average", **kwargs)
    assert leftovers(tmp_path, set()) == []


def test_odd_frame_size_needs_a_full_chroma_format(tmp_path):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    for i in range(3):
        write_image(ir_dir / f"{i}.png", ir_frames(1)[0][:47, :63])
        write_image(vis_dir / f"{i}.png", vis_frames(1)[0][:47, :63])
    with pytest.raises(ValueError, match="needs a frame width divisible by 2"):
        ivfusion.fuse_video(ir_dir, vis_dir, tmp_path / "o.mp4", method="average")
    r = ivfusion.fuse_video(ir_dir, vis_dir, tmp_path / "o.mp4", method="average", pix_fmt="yuv444p",
                            progress=False)
    assert r.size == (47, 63) and r.frames == 3


def test_mpeg4_fallback_encoder(clips, tmp_path):
    r = ivfusion.fuse_video(clips["ir"], clips["vis"], tmp_path / "o.avi", method="average", codec="mpeg4",
                            progress=False)
    rate, info, frames = read_video(tmp_path / "o.avi")
    assert (info["codec"], len(frames), rate) == ("mpeg4", N, 25) and r.codec == "mpeg4"
    _, _, ir_in = read_video(clips["ir"])
    _, _, vis_in = read_video(clips["vis"])
    assert_matches_fuse(frames, [a for _, a in ir_in], [a for _, a in vis_in], method="average", tol=6, max_tol=64)


# ------------------------------------------------------------------------------------ extra, CLI, API


def test_missing_pyav_names_the_extra(clips, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'ivfusion\[video\]'"):
        ivfusion.fuse_video(clips["ir"], clips["vis"], tmp_path / "o.mp4", method="average")
    assert main(["fuse-video", str(clips["ir"]), str(clips["vis"]), "-o", str(tmp_path / "o.mp4"),
                 "-m", "average"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ivfusion: error: video fusion needs PyAV") and "ivfusion[video]" in err
    assert err.count("\n") == 1 and leftovers(tmp_path, set()) == []


def test_cli_end_to_end(clips, tmp_path, capsys):
    out = tmp_path / "fused.mp4"
    args = ["fuse-video", str(clips["ir"]), str(clips["vis"]), "-o", str(out), "-m", "laplacian",
            "-O", "levels=3", "--frames", "2:10", "--batch-size", "3", "--crf", "0", "--pix-fmt", "yuv444p",
            "--codec-option", "preset=ultrafast"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith(f"wrote {out}: 8 frames at 25 fps, 64x48, libx264") and "frames/s" in stdout
    rate, _, frames = read_video(out)
    _, _, ir_in = read_video(clips["ir"])
    _, _, vis_in = read_video(clips["vis"])
    assert rate == 25 and len(frames) == 8
    assert_matches_fuse(frames, [a for _, a in ir_in[2:10]], [a for _, a in vis_in[2:10]], method="laplacian",
                        levels=3)
    # Existing output, an input as output, a mismatch: one line on stderr, exit status 1.
    for extra, message in (([], "exists; pass --overwrite"),
                           (["--overwrite", "-o", str(clips["ir"])], "is the ir input"),
                           (["--overwrite"], "differ in frame count")):
        vis = clips["vis8"] if message == "differ in frame count" else clips["vis"]
        argv = ["fuse-video", str(clips["ir"]), str(vis), "-o", str(out), "-m", "average", *extra]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("ivfusion: error: ") and message in err and err.count("\n") == 1
    assert main(["fuse-video", str(clips["ir"]), str(clips["vis8"]), "-o", str(out), "-m", "average",
                 "--sync", "index", "--overwrite", "--no-progress"]) == 0
    assert len(read_video(out)[2]) == 8


def test_cli_rejects_bad_frames_range(clips, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fuse-video", str(clips["ir"]), str(clips["vis"]), "-o", str(tmp_path / "o.mp4"), "--frames", "7"])
    assert exc.value.code == 2 and "expected START:STOP" in capsys.readouterr().err


def test_public_api():
    assert ivfusion.fuse_video is video.fuse_video and "fuse_video" in ivfusion.__all__
    assert video.SYNC_MODES == ("strict", "nearest", "index")


def test_window_percentiles_from_histogram():
    hist = np.zeros(65536, dtype=np.int64)
    hist[[100, 200, 300, 400]] = [1, 98, 0, 1]
    assert _mapping._window_from_histogram(hist, (0, 100)) == (100.0, 400.0)
    assert _mapping._window_from_histogram(hist, (1, 99)) == (200.0, 200.0 + 1)
    assert _mapping._window_from_histogram(hist, (0.5, 99.5)) == (100.0, 400.0)


def test_natural_sort_key():
    names = ["f10.png", "f2.png", "F1.png", "f1b.png"]
    assert sorted(names, key=_sources._natural_key) == ["F1.png", "f1b.png", "f2.png", "f10.png"]
