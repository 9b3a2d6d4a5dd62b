"""Reliability under hostile conditions (issue 31): a bounded CPU heap whatever the image sizes,
weight files given by path checked against the manifest weight they claim to be, no worker left
behind by ``kill -9``, one-line CLI errors for outputs that cannot be written (no permission, a
directory, a full disk), no process-wide umask change, and the smaller input checks."""
from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ivfusion
from ivfusion import fusion, io
from ivfusion.cli import main
from ivfusion.io import read_image, write_image
from ivfusion.pretrained import BUNDLED_DIR, ChecksumError, get_weight_info, sha256_file

from .conftest import REPO_ROOT, signal_at_marker, smooth_image

LINUX = sys.platform.startswith("linux")


def one_error_line(err: str, *needles: str) -> None:
    """stderr is exactly one ``ivfusion: error: ...`` line containing every needle (no traceback)."""
    assert err.startswith("ivfusion: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


# ------------------------------------------------------------------------------------ mounts and privileges


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small tmpfs mounted at ``path`` (root on Linux only; the test is skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    if not LINUX or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root on Linux")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _drop_dac_override() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: root ignores permission bits with them
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(args, **kwargs) -> subprocess.CompletedProcess:
    """``python -m ivfusion ARGS`` in a child that permission bits apply to (as root: without
    CAP_DAC_OVERRIDE)."""
    preexec = _drop_dac_override if LINUX and os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-m", "ivfusion", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, preexec_fn=preexec, **kwargs)


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    check = subprocess.run([sys.executable, "-c", f"open({str(folder / 'x')!r}, 'w')"], capture_output=True,
                           preexec_fn=_drop_dac_override if LINUX and os.geteuid() == 0 else None)
    if check.returncode == 0:
        pytest.skip("permission bits are not enforced for this user here")
    yield folder
    folder.chmod(0o755)


# ------------------------------------------------------------------------------------ 1. bounded heap

_HEAP_LOOP = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    import ivfusion
    from ivfusion import _heap
    torch.set_num_threads(2)
    varying, n, lo, hi = sys.argv[1] == "varying", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    g = np.random.default_rng(0)
    img = (g.random((hi + 4, hi + 4)) * 255).astype(np.uint8)
    sizes = np.random.default_rng(1).integers(lo, hi + 1, size=(n, 2))
    calls = []
    for i in range(n):
        h, w = (int(sizes[i, 0]), int(sizes[i, 1])) if varying else (hi, hi)
        ivfusion.fuse(img[:h, :w], img[4:h + 4, :w], "f3net", device="cpu")
        calls.append({"rss": _heap._resident_bytes(), "base": _heap._base_rss, "largest": _heap._largest_growth,
                      "trims": _heap._trims})
    print(json.dumps(calls))
""")


def _heap_loop(kind: str, n: int, lo: int, hi: int) -> list:
    proc = subprocess.run([sys.executable, "-c", _HEAP_LOOP, kind, str(n), str(lo), str(hi)], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not ivfusion._heap.heap_reuse_supported(), reason="needs glibc")
@pytest.mark.slow
def test_heap_stays_bounded_when_sizes_vary_and_is_kept_at_a_fixed_size():
    """F3Net on the CPU (the 400-call, 200-640 px version is benchmarks/heap_bound.py)."""
    fixed = _heap_loop("fixed", 8, 256, 256)
    assert fixed[-1]["trims"] == 0  # a loop at one size keeps the cache it reuses: its speed is kept
    settled = [c["rss"] for c in fixed[3:]]
    assert max(settled) - min(settled) < 0.1 * max(settled)
    varying = _heap_loop("varying", 30, 64, 256)  # without the bound: 182 MB added > 1.25 x 57 MB
    assert varying[-1]["trims"] >= 1
    # After every call the resident memory added since the base (the start, or the last trim) is
    # within BOUND_FACTOR times the largest growth one call caused (64 MiB at least).
    heap = ivfusion._heap
    for i, c in enumerate(varying):
        added = c["rss"] - c["base"]
        assert added <= max(heap.BOUND_FACTOR * c["largest"], heap._MIN_TRIM_BYTES), (i, added, c)
    # the criterion: the varying-size loop stays within 1.5x the fixed-size loop's plateau at
    # the largest size (here a loose check, as the process's own memory dominates at 256 px; the
    # 400-call, 200-640 px measurement is benchmarks/heap_bound.py's)
    plateau = statistics.median(c["rss"] for c in fixed[len(fixed) // 2:])
    assert max(c["rss"] for c in varying) <= 1.5 * plateau, (max(c["rss"] for c in varying), plateau)


# ------------------------------------------------------------------------------------ 2. weights by path


def _flip_tensor_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(st.st_size - 4096)  # inside the last tensor's data, far from the header
        byte = fh.read(1)
        fh.seek(st.st_size - 4096)
        fh.write(bytes([byte[0] ^ 0x5A]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _resave(src: Path, dst: Path, *, metadata_update: dict, perturb: bool) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if perturb:
        key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 8)
        tensors[key] = tensors[key] * 1.01
    meta.update(metadata_update)
    meta = {k: v for k, v in meta.items() if v is not None}
    save_file(tensors, str(dst), metadata=meta)


@pytest.fixture
def f3net_copy(tmp_path) -> Path:
    path = tmp_path / "copy" / "f3net_ivif.safetensors"
    path.parent.mkdir()
    shutil.copy(BUNDLED_DIR / "f3net_ivif.safetensors", path)
    return path


def test_tampered_weight_file_given_by_path_is_a_checksum_error(f3net_copy, rng, tmp_path, capsys):
    info = get_weight_info("f3net.ivif")
    a, b = smooth_image(rng, 40, 48), smooth_image(rng, 40, 48)
    good = ivfusion.fuse(a, b, "f3net", weights=f3net_copy, device="cpu", precision="fp32")
    np.testing.assert_array_equal(good, ivfusion.fuse(a, b, "f3net", device="cpu", precision="fp32"))
    _flip_tensor_byte(f3net_copy)
    with pytest.raises(ChecksumError) as exc:
        ivfusion.create_model("f3net", weights=str(f3net_copy))
    assert str(f3net_copy) in str(exc.value) and info.sha256 in str(exc.value)
    with pytest.raises(ChecksumError, match=info.sha256):
        ivfusion.fuse(a, b, "f3net", weights=f3net_copy, device="cpu")
    out = tmp_path / "o.png"
    write_image(tmp_path / "a.png", a)
    write_image(tmp_path / "b.png", b)
    code = main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out), "-m", "f3net",
                 "--device", "cpu", "--weights", str(f3net_copy)])
    assert code == 1 and not out.exists()
    one_error_line(capsys.readouterr().err, "SHA-256 mismatch", str(f3net_copy), info.sha256)


def test_weight_changed_in_place_with_its_mtime_restored_is_hashed_again(f3net_copy, rng):
    a = smooth_image(rng, 32, 32)
    digest = sha256_file(f3net_copy)
    ivfusion.fuse(a, a[::-1].copy(), "f3net", weights=f3net_copy, device="cpu")  # verified, cached
    _flip_tensor_byte(f3net_copy, keep_mtime=True)
    assert sha256_file(f3net_copy) != digest  # the memo keys on the change time too
    with pytest.raises(ChecksumError):
        ivfusion.create_model("f3net", weights=f3net_copy)
    with pytest.raises(ChecksumError):  # the model cache keys on the file's identity, not its path
        ivfusion.fuse(a, a[::-1].copy(), "f3net", weights=f3net_copy, device="cpu")


def test_files_that_are_not_the_release_load_as_before(tmp_path, rng):
    src = BUNDLED_DIR / "f3net_ivif.safetensors"
    # no claim at all, tensors changed: loads (nothing to check it against)
    plain = tmp_path / "plain.safetensors"
    _resave(src, plain, metadata_update={"name": None}, perturb=True)
    # a training candidate exported under the released name: another header (step, config)
    candidate = tmp_path / "candidate.safetensors"
    _resave(src, candidate, metadata_update={"step": "9999", "config": json.dumps({"seed": 7})}, perturb=True)
    a, b = smooth_image(rng, 32, 40), smooth_image(rng, 32, 40)
    released = ivfusion.fuse(a, b, "f3net", device="cpu", precision="fp32")
    for path in (plain, candidate):
        ivfusion.create_model("f3net", weights=path)
        out = ivfusion.fuse(a, b, "f3net", weights=path, device="cpu", precision="fp32")
        assert out.shape == released.shape and not np.array_equal(out, released)
    # the same header as the release with other tensors is not the release: a checksum error
    same_header = tmp_path / "same_header.safetensors"
    shutil.copy(src, same_header)
    _flip_tensor_byte(same_header)
    with pytest.raises(ChecksumError, match="f3net.ivif"):
        ivfusion.create_model("f3net", weights=same_header)


# ------------------------------------------------------------------------------------ 3. orphaned workers


def _descendants(pid: int) -> set:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_text = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat_text[stat_text.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, set()).add(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_kill_9_of_a_workers_run_leaves_no_process(tmp_path, rng):
    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
    write_image(tmp_path / "ir" / "x.png", smooth_image(rng, 256, 256))
    write_image(tmp_path / "vi" / "x.png", smooth_image(rng, 256, 256, channels=3))
    for i in range(400):  # links: many pairs, so the run is still busy when it is killed
        os.link(tmp_path / "ir" / "x.png", tmp_path / "ir" / f"p{i:03d}.png")
        os.link(tmp_path / "vi" / "x.png", tmp_path / "vi" / f"p{i:03d}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ivfusion", "fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir",
                             str(tmp_path / "vi"), "--out-dir", str(out), "-m", "guided", "--device", "cpu",
                             "--workers", "2", "--no-progress"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    workers: set = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out.is_dir() and any(out.glob("*.png"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        workers = _descendants(proc.pid)
        assert len(workers) >= 2, "the workers did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        survivors = [p for p in workers if _alive(p)]
    finally:  # whatever happened, leave nothing running (the recorded workers, not only the descendants now)
        for p in workers | _descendants(proc.pid) | ({proc.pid} if proc.poll() is None else set()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    assert survivors == [], f"worker processes {survivors} outlived their parent"
    assert len(list(out.glob("*.png"))) < 401  # it was killed mid-way


def _chained_init(worker_id: int) -> None:
    print(f"chained {worker_id}", flush=True)


def test_die_with_parent_in_a_worker_runs_the_chained_init():
    import multiprocessing
    import pickle

    from ivfusion._workers import die_with_parent

    init = pickle.loads(pickle.dumps(die_with_parent(_chained_init)))  # DataLoader may pickle it
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def worker() -> None:
        init(5)  # the parent (this test's process) is alive: the worker goes on
        writer.send("alive")

    proc = ctx.Process(target=worker)
    proc.start()
    assert reader.poll(60) and reader.recv() == "alive"
    proc.join(60)
    assert proc.exitcode == 0


# ------------------------------------------------------------------------------------ 4. output errors


def test_non_writable_output_folder_is_one_line(pair_files, read_only_folder, tmp_path):
    ir, vis = pair_files
    proc = run_cli(["fuse", ir, vis, "-o", read_only_folder / "o.png", "-m", "average"])
    assert proc.returncode == 1
    one_error_line(proc.stderr, "cannot write", str(read_only_folder / "o.png"), "Permission denied")
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    write_image(ir_dir / "a.png", read_image(ir))
    write_image(vis_dir / "a.png", read_image(vis))
    proc = run_cli(["fuse", "--ir-dir", ir_dir, "--vis-dir", vis_dir, "--out-dir", read_only_folder, "-m", "average",
                    "--no-progress"])
    assert proc.returncode == 1
    one_error_line(proc.stderr, "--out-dir: cannot write into", "Permission denied")
    assert list(read_only_folder.iterdir()) == []


def test_fuse_video_non_writable_output_folder_is_one_line(read_only_folder, tmp_path, rng):
    pytest.importorskip("av")
    ir_dir, vis_dir = _frame_folders(tmp_path, rng, 3)
    proc = run_cli(["fuse-video", ir_dir, vis_dir, "-o", read_only_folder / "v.mp4", "-m", "average",
                    "--no-progress"])
    assert proc.returncode == 1
    one_error_line(proc.stderr, "cannot write", str(read_only_folder / "v.mp4"), "Permission denied")
    assert list(read_only_folder.iterdir()) == []


def test_output_path_that_is_a_directory_is_one_line_even_with_overwrite(pair_files, tmp_path, capsys, rng):
    ir, vis = pair_files
    folder = tmp_path / "outdir.png"
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["fuse", str(ir), str(vis), "-o", str(folder), "-m", "average", *extra]) == 1
        one_error_line(capsys.readouterr().err, "is a directory")
    assert folder.is_dir() and list(folder.iterdir()) == []
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_image(folder, read_image(ir))
    pytest.importorskip("av")
    ir_dir, vis_dir = _frame_folders(tmp_path, rng, 2)
    vfolder = tmp_path / "video.mp4"
    vfolder.mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["fuse-video", str(ir_dir), str(vis_dir), "-o", str(vfolder), "-m", "average", *extra]) == 1
        one_error_line(capsys.readouterr().err, "is a directory")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        ivfusion.fuse_video(ir_dir, vis_dir, vfolder, "average", overwrite=True)


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys):
    g = np.random.default_rng(0)
    ir = tmp_path / "ir.png"
    vis = tmp_path / "vis.png"
    write_image(ir, (g.random((700, 700)) * 255).astype(np.uint8))  # noise: ~0.5 MB as PNG, incompressible
    write_image(vis, (g.random((700, 700, 3)) * 255).astype(np.uint8))
    with tmpfs(tmp_path / "small", "size=256k") as disk:
        out = disk / "o.png"
        assert main(["fuse", str(ir), str(vis), "-o", str(out), "-m", "average"]) == 1
        one_error_line(capsys.readouterr().err, "cannot write", str(out), "No space left on device")
        assert list(disk.iterdir()) == []  # no output, no temporary
        # batch mode: the run stops at the first output that does not fit, one line, no traceback
        for sub in ("ir", "vi"):
            (tmp_path / sub).mkdir()
        for i in range(4):
            os.link(ir, tmp_path / "ir" / f"p{i}.png")
            os.link(vis, tmp_path / "vi" / f"p{i}.png")
        for workers in ("0", "2"):
            code = main(["fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"), "--out-dir",
                         str(disk / "batch"), "-m", "average", "--no-progress", "--workers", workers,
                         "--skip-existing"])
            assert code == 1
            one_error_line(capsys.readouterr().err, "cannot write", "No space left on device")
            assert [p.name for p in (disk / "batch").iterdir() if p.name.startswith(".")] == []
            # the workers are shut down when the run stops, not when the garbage collector finds
            # the loader (then each waited out a 5 s timeout)
            assert multiprocessing.active_children() == []


def test_fuse_video_full_disk_is_one_line(tmp_path, rng, capsys):
    pytest.importorskip("av")
    ir_dir, vis_dir = _frame_folders(tmp_path, rng, 6, size=(96, 128), noise=True)
    with tmpfs(tmp_path / "small", "size=32k") as disk:
        out = disk / "v.mkv"
        code = main(["fuse-video", str(ir_dir), str(vis_dir), "-o", str(out), "-m", "average", "--codec", "ffv1",
                     "--pix-fmt", "yuv444p", "--no-progress"])
        assert code == 1
        one_error_line(capsys.readouterr().err, "cannot write", str(out), "No space left on device")
        assert list(disk.iterdir()) == []


def test_read_only_file_system_is_one_line(pair_files, tmp_path, capsys):
    ir, vis = pair_files
    with tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        assert main(["fuse", str(ir), str(vis), "-o", str(disk / "o.png"), "-m", "average"]) == 1
        one_error_line(capsys.readouterr().err, "cannot write", "Read-only file system")


def _frame_folders(tmp_path: Path, rng, n: int, size=(32, 48), noise: bool = False):
    ir_dir, vis_dir = tmp_path / "frames_ir", tmp_path / "frames_vi"
    for i in range(n):
        if noise:
            a = (rng.random(size) * 255).astype(np.uint8)
            b = (rng.random(size + (3,)) * 255).astype(np.uint8)
        else:
            a, b = smooth_image(rng, *size), smooth_image(rng, *size, channels=3)
        write_image(ir_dir / f"{i:03d}.png", a)
        write_image(vis_dir / f"{i:03d}.png", b)
    return ir_dir, vis_dir


# ------------------------------------------------------------------------------------ 5. umask

#: Atomic writes in the suite's race test. On a disk the old code (umask 0 for a moment) gave 68
#: world-writable files in 100,000 writes, so 5,000 miss it about 3 % of the time; the deterministic
#: check is test_atomic_writes_never_change_the_umask. The issue's 100,000 (``IVFUSION_UMASK_WRITES=100000``)
#: were run outside the suite (docs/reliability.md).
UMASK_WRITES = int(os.environ.get("IVFUSION_UMASK_WRITES", "5000"))


def test_atomic_writes_never_change_the_umask(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "umask", lambda *a: calls.append(a) or 0o022)
    io.write_atomic(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    write_image(tmp_path / "b.png", np.zeros((2, 2), np.uint8))
    assert calls == []


def test_no_world_writable_file_from_concurrent_atomic_writes(tmp_path):
    """One thread writes atomically, the other creates plain files for as long; with the umask 022
    no file may come out writable by others (the old code set the umask to 0 for a moment on every
    atomic write: 30 world-writable files in 297,000 writes)."""
    folder = Path(os.environ.get("IVFUSION_UMASK_DIR") or tmp_path)
    atomic_dir, plain_dir = folder / "atomic", folder / "plain"
    atomic_dir.mkdir()
    plain_dir.mkdir()
    old = os.umask(0o022)
    done = threading.Event()
    errors, bad, created = [], [], [0]

    def atomic() -> None:
        try:
            for i in range(UMASK_WRITES):
                io.write_atomic(atomic_dir / f"{i % 64}", lambda tmp: None)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    def plain() -> None:
        try:
            while not done.is_set():
                path = plain_dir / str(created[0] % 64)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                if os.stat(path).st_mode & stat.S_IWOTH:
                    bad.append(path.name)
                os.unlink(path)
                created[0] += 1
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=atomic), threading.Thread(target=plain)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.umask(old)
    assert errors == []
    assert bad == [], f"{len(bad)} of {created[0]} files created by the other thread were world-writable"
    assert created[0] > 0
    print(f"{UMASK_WRITES} atomic writes, {created[0]} files created by the other thread meanwhile, "
          "none world-writable")
    modes = {stat.S_IMODE(p.stat().st_mode) for p in atomic_dir.iterdir()}
    assert modes == {0o644}, modes


# ------------------------------------------------------------------------------------ minor items


def test_stale_temporaries_of_a_killed_fuse_video_are_removed_by_the_next_run(tmp_path, rng):
    pytest.importorskip("av")
    ir_dir, vis_dir = _frame_folders(tmp_path, rng, 4)
    out = tmp_path / "out" / "v.mp4"
    code = textwrap.dedent("""
        import sys, time
        from ivfusion.video import _encode
        real = _encode._AtomicEncoder.write
        def slow(self, *a):
            real(self, *a)
            print("WRITING", flush=True)
            time.sleep(120)
        _encode._AtomicEncoder.write = slow
        from ivfusion.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    signal_at_marker(code, ["fuse-video", ir_dir, vis_dir, "-o", out, "-m", "average", "--no-progress"], "WRITING",
                     signal.SIGKILL)
    stale = [p.name for p in out.parent.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".v.mp4.") and ".part" in stale[0] and not out.exists()
    unrelated = out.parent / ".other.mp4.1-abcd.part.mp4"
    unrelated.write_bytes(b"not ours")
    ivfusion.fuse_video(ir_dir, vis_dir, out, "average", progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == [unrelated.name, "v.mp4"]


def test_remove_stale_temporaries_keeps_a_running_writers_file(tmp_path):
    target = tmp_path / "a.png"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    files = {
        "live": tmp_path / f".a.png.{os.getpid()}-00ff.part.png",
        "dead": tmp_path / f".a.png.{dead_pid}-00ff.part.png",
        "legacy": tmp_path / ".a.png.k2x_9abc.part.png",  # the naming before process ids
        "other": tmp_path / f".b.png.{dead_pid}-00ff.part.png",
    }
    for path in files.values():
        path.write_bytes(b"x")
    removed = io.remove_stale_temporaries([target])
    assert sorted(removed) == sorted([files["dead"], files["legacy"]])
    assert files["live"].exists() and files["other"].exists()


def test_a_directory_given_as_an_image_says_so(tmp_path, pair_files, capsys):
    ir, vis = pair_files
    folder = tmp_path / "somedir"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"ir: '.*somedir' is a directory, not an image file"):
        ivfusion.fuse(folder, vis, "average")
    assert main(["fuse", str(ir), str(folder), "-o", str(tmp_path / "o.png"), "-m", "average"]) == 1
    one_error_line(capsys.readouterr().err, "vis:", "is a directory")


def test_option_of_the_wrong_type_is_named(pair_files, tmp_path, capsys):
    ir, vis = pair_files
    assert main(["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "-m", "laplacian", "-O", "levels=abc"]) == 1
    one_error_line(capsys.readouterr().err, "option levels must be an integer, got 'abc'")
    a = smooth_image(np.random.default_rng(0), 24, 24)
    for method, key, value, kind in [("laplacian", "levels", 2.5, "an integer"),
                                     ("laplacian", "levels", True, "an integer"),
                                     ("guided", "eps1", "x", "a finite number"),
                                     ("guided", "eps2", float("nan"), "a finite number")]:
        with pytest.raises(ValueError, match=f"method '{method}': option {key} must be {kind}"):
            ivfusion.fuse(a, a, method, **{key: value})
    # numpy scalars are numbers too
    np.testing.assert_array_equal(ivfusion.fuse(a, a, "laplacian", levels=np.int64(3)),
                                  ivfusion.fuse(a, a, "laplacian", levels=3))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (0, 0, 3)])
def test_empty_array_is_a_clear_value_error(shape):
    empty, ok = np.zeros(shape, np.uint8), np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"^ir: empty image: array of shape .* has \d+x\d+ \(HxW\) pixels"):
        ivfusion.fuse(empty, ok, "f3net", device="cpu")
    with pytest.raises(ValueError, match=r"^vis: empty image"):
        ivfusion.fuse(ok, empty, "average")
    import torch

    with pytest.raises(ValueError, match=r"^vis: empty image: tensor of shape"):
        ivfusion.fuse(ok, torch.zeros((1,) + shape[:2]), "average")


def test_same_file_as_infrared_and_visible_is_rejected(pair_files, tmp_path, capsys):
    ir, vis = pair_files
    link = tmp_path / "link.png"
    link.symlink_to(ir)
    for other in (ir, link, tmp_path / "x" / ".." / ir.name):
        with pytest.raises(ValueError, match="ir and vis are the same file"):
            ivfusion.fuse(ir, other, "average")
    assert main(["fuse", str(ir), str(ir), "-o", str(tmp_path / "o.png"), "-m", "average"]) == 1
    one_error_line(capsys.readouterr().err, "ir and vis are the same file")
    with pytest.raises(ValueError, match="ir_dir and vis_dir are the same folder"):
        ivfusion.fuse_dir(tmp_path, tmp_path, tmp_path / "out", "average")
    # an image fused with itself on purpose: pass the array twice
    a = read_image(ir)
    np.testing.assert_array_equal(ivfusion.fuse(a, a, "average"), a)


def test_same_input_twice_is_rejected_by_fuse_video(tmp_path, rng):
    pytest.importorskip("av")
    ir_dir, _ = _frame_folders(tmp_path, rng, 2)
    with pytest.raises(ValueError, match="ir and vis are the same file"):
        ivfusion.fuse_video(ir_dir, ir_dir, tmp_path / "v.mp4", "average")


@pytest.mark.filterwarnings("ignore:didfuse. running with random")
def test_cold_start_threads_load_the_model_once(monkeypatch):
    fusion._load_model.cache_clear()
    loads = []
    real = fusion.create_random_model

    def slow_create(*args, **kwargs):
        loads.append(threading.get_ident())
        time.sleep(0.5)  # long enough for every thread to reach the cache while the first loads
        return real(*args, **kwargs)

    monkeypatch.setattr(fusion, "create_random_model", slow_create)
    a = smooth_image(np.random.default_rng(0), 24, 24)
    results, errors = [], []

    def call() -> None:
        try:
            results.append(ivfusion.fuse(a, a[::-1].copy(), "didfuse", weights="random", device="cpu"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fusion._load_model.cache_clear()
    assert errors == [] and len(results) == 4
    assert len(loads) == 1, f"the model was loaded {len(loads)} times"
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
