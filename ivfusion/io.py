"""Reading, normalising and writing images.

Every public entry point of ivfusion accepts the same image kinds (:data:`ImageLike`): a file
path, a PIL image, a numpy array (``H x W``, ``H x W x 1`` or ``H x W x 3``; ``uint8``,
``uint16`` or float in [0, 1]) or a torch tensor (``H x W``, ``C x H x W`` or ``1 x C x H x W``
with ``C`` in {1, 3}). This module turns them into one canonical form, a ``(C, H, W)`` tensor,
and back.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageLike",
    "IMAGE_EXTENSIONS",
    "read_image",
    "to_chw_tensor",
    "to_unit_range",
    "check_unit_float",
    "is_grey",
    "from_unit_range",
    "write_image",
    "save_image",
    "write_atomic",
    "temporary_path",
    "remove_stale_temporaries",
    "check_output_file",
    "check_writable_folder",
    "is_write_fatal",
    "is_same_file",
    "images_by_stem",
    "pair_files",
]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

#: File extensions treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_KIND_OF_DTYPE = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16"}


def is_same_file(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    """Whether two paths name one file: equal after resolving ``~``, ``..`` and symbolic links, or
    (both existing) the same inode, as a hard link is. Used to refuse writing an output over an
    input, whatever ``overwrite`` says."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.resolve() == pb.resolve():
            return True
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def read_image(path: Union[str, os.PathLike], *, name: str = "image") -> np.ndarray:
    """Decode an image file to a numpy array in its native bit depth.

    Returns ``uint8`` ``H x W`` (grey) or ``H x W x 3`` (colour); ``uint16`` ``H x W`` for 16-bit
    grey files (PNG/TIFF, as thermal cameras write them); ``float32`` ``H x W`` for floating-point
    TIFFs. Alpha channels are dropped, palettes expanded.

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError: the path is a directory.
        ValueError: the file is not a readable image.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name}: {str(path)!r} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file: {str(path)!r}")
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_array(img, name=name)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{name}: cannot read {str(path)!r} as an image ({exc})") from exc


def pil_to_array(img: Image.Image, *, name: str = "image") -> np.ndarray:
    """Convert a PIL image to a numpy array (see :func:`read_image` for the output forms)."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(img).astype(np.uint16, copy=False)
    if mode == "I":  # 32-bit integer container; 16-bit PNGs often open in this mode
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{name}: 32-bit integer image with values outside 0..65535")
        return arr.astype(np.uint16)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"))
    # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV ...
    return np.asarray(img.convert("RGB"))


def _check_not_empty(chw_shape: Sequence[int], given: Sequence[int], name: str, what: str) -> None:
    if chw_shape[-2] == 0 or chw_shape[-1] == 0:
        raise ValueError(f"{name}: empty image: {what} of shape {tuple(given)} has "
                         f"{chw_shape[-2]}x{chw_shape[-1]} (HxW) pixels; expected at least 1x1")


def _array_to_chw(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        chw = arr[None]
    elif arr.ndim == 3 and arr.shape[2] in (1, 3):
        chw = np.moveaxis(arr, 2, 0)
    else:
        raise ValueError(
            f"{name}: expected an array of shape HxW, HxWx1 or HxWx3, got {arr.shape}"
        )
    _check_not_empty(chw.shape, arr.shape, name, "array")
    return chw


def _tensor_to_chw(t: torch.Tensor, name: str) -> torch.Tensor:
    given = tuple(t.shape)
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"{name}: expected a tensor of shape HxW, CxHxW or 1xCxHxW with C in (1, 3), "
            f"got {tuple(t.shape)}"
        )
    _check_not_empty(t.shape, given, name, "tensor")
    return t


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    # Share memory with the array (no copy). Arrays decoded by PIL are read-only; ivfusion never
    # writes into its inputs, so torch's warning about non-writable arrays does not apply.
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def to_chw_tensor(image: ImageLike, *, name: str = "image") -> Tuple[torch.Tensor, str]:
    """Turn any :data:`ImageLike` into a ``(C, H, W)`` tensor and a dtype kind.

    The tensor keeps the input's values (no scaling yet) and, for tensor inputs, its device.
    ``kind`` is ``"uint8"``, ``"uint16"`` or ``"float"``; ``uint16`` data are held as ``int32``
    because torch has few ``uint16`` kernels.

    Raises:
        TypeError: unsupported Python type or dtype.
        ValueError: unsupported shape, or no pixels (a height or width of 0).
        FileNotFoundError: a path that does not exist.
        IsADirectoryError: a path that is a directory.
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, name=name)
    elif isinstance(image, Image.Image):
        image = pil_to_array(image, name=name)

    if isinstance(image, np.ndarray):
        arr = _array_to_chw(image, name)
        kind = _KIND_OF_DTYPE.get(arr.dtype)
        if kind == "uint16":
            return torch.from_numpy(arr.astype(np.int32)), kind
        if kind == "uint8":
            return _from_numpy(np.ascontiguousarray(arr)), kind
        if np.issubdtype(arr.dtype, np.floating):
            return _from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), "float"
        raise TypeError(
            f"{name}: unsupported array dtype {arr.dtype}; expected uint8, uint16 or float in [0, 1]"
        )
    if isinstance(image, torch.Tensor):
        t = _tensor_to_chw(image.detach(), name)
        if t.dtype == torch.uint8:
            return t, "uint8"
        if t.dtype == torch.uint16:
            return t.to(torch.int32), "uint16"
        if t.is_floating_point():
            return t, "float"
        raise TypeError(
            f"{name}: unsupported tensor dtype {t.dtype}; expected uint8, uint16 or float in [0, 1]"
        )
    raise TypeError(
        f"{name}: expected a path, PIL image, numpy array or torch tensor, got {type(image).__name__}"
    )


def check_unit_float(x: torch.Tensor, *, name: str = "image") -> torch.Tensor:
    """Return ``x`` unchanged if it is finite and within [0, 1]; ``ValueError`` naming ``name`` otherwise."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: float image contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "scale the image or pass integer data"
        )
    return x


def to_unit_range(
    t: torch.Tensor,
    kind: str,
    *,
    name: str = "image",
    value_range: Optional[Union[Sequence[float], str]] = None,
) -> torch.Tensor:
    """Scale a tensor from :func:`to_chw_tensor` to ``float32`` in ``[0, 1]``.

    Args:
        t: ``(C, H, W)`` tensor of the given ``kind``.
        kind: ``"uint8"`` (divided by 255), ``"uint16"`` (divided by 65535) or ``"float"``
            (must already lie in [0, 1]).
        value_range: overrides the rule above. ``(lo, hi)`` maps ``lo -> 0`` and ``hi -> 1``
            and clips; ``"auto"`` maps the image's own minimum and maximum to 0 and 1 (a
            constant image maps to 0).

    Raises:
        ValueError: float data outside [0, 1] or containing NaN/inf; a bad ``value_range``.
    """
    x = t.float() if t.dtype != torch.float32 else t
    if value_range is None:
        if kind == "uint8":
            return x / 255.0
        if kind == "uint16":
            return x / 65535.0
        return check_unit_float(x, name=name)
    if isinstance(value_range, str):
        if value_range != "auto":
            raise ValueError(f"{name}: value range must be (lo, hi) or 'auto', got {value_range!r}")
        lo_t, hi_t = x.amin(), x.amax()
        span = (hi_t - lo_t).clamp_min(torch.finfo(torch.float32).tiny)
        return ((x - lo_t) / span).clamp_(0.0, 1.0)
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: value range must be (lo, hi) or 'auto', got {value_range!r}") from None
    if not hi > lo:
        raise ValueError(f"{name}: value range needs lo < hi, got ({lo}, {hi})")
    return ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)


def is_grey(chw: torch.Tensor) -> bool:
    """True for a 1-channel image and for a 3-channel image whose channels are all equal."""
    if chw.shape[-3] == 1:
        return True
    return bool(torch.equal(chw[..., 0, :, :], chw[..., 1, :, :]) and torch.equal(chw[..., 0, :, :], chw[..., 2, :, :]))


def from_unit_range(chw: torch.Tensor, kind: str) -> np.ndarray:
    """Convert a ``(C, H, W)`` float tensor in [0, 1] to a numpy image of the given kind.

    ``uint8``/``uint16`` are rounded to nearest; ``float`` gives ``float32``. One-channel images
    come out as ``H x W``, three-channel ones as ``H x W x 3``.
    """
    if kind == "uint8":
        out = (chw.clamp(0, 1) * 255.0).round_().to(torch.uint8)
    elif kind == "uint16":
        out = (chw.clamp(0, 1) * 65535.0).round_().to(torch.int32)
    else:
        out = chw.float()
    arr = out.cpu().numpy()
    if kind == "uint16":
        arr = arr.astype(np.uint16)
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(arr, 0, -1))


def _pil_for_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype == np.uint8:
        return Image.fromarray(arr)
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError("16-bit images can only be written as single-channel files")
        return Image.fromarray(arr)  # mode I;16
    if np.issubdtype(arr.dtype, np.floating):
        return Image.fromarray(np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))
    raise TypeError(f"cannot write an image of dtype {arr.dtype}")


def temporary_path(path: Union[str, os.PathLike], suffix: str = ".part") -> Path:
    """Create an empty hidden file next to ``path`` for an atomic write and return its path.

    The name is ``.<name>.<pid>-<random><suffix>``: the writer's process id lets
    :func:`remove_stale_temporaries` tell the leftovers of a killed writer from a running one's.
    The file is created with ``os.open(..., 0o666)``, so the kernel gives it the mode every new
    file gets (``0666`` less the umask, or the folder's default ACL); the process umask is never
    read or changed (changing it, even briefly, races with files other threads create).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary name next to {str(path)!r}")


def _temporary_owner(name: str) -> Tuple[Optional[str], Optional[int]]:
    """``(output name, writer pid or None)`` of a temporary's file name, ``(None, None)`` if it is not one."""
    if not name.startswith("."):
        return None, None
    rest = name[1:]
    end = rest.rfind(".part")
    dot = rest.rfind(".", 0, end) if end > 0 else -1
    if dot <= 0:
        return None, None
    pid, sep, _ = rest[dot + 1:end].partition("-")
    return rest[:dot], int(pid) if sep and pid.isdigit() else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep its file
    return True


def remove_stale_temporaries(targets: Iterable[Union[str, os.PathLike]]) -> List[Path]:
    """Delete the hidden temporaries of these outputs (see :func:`temporary_path`) that a killed
    writer left behind: those of processes that no longer exist, and those of the older naming
    (``.<name>.<random>.part<ext>``, no process id). A running writer's temporary and every other
    file are left alone. Returns the files deleted."""
    by_folder: Dict[Path, set] = {}
    for target in targets:
        target = Path(target)
        by_folder.setdefault(target.parent, set()).add(target.name)
    removed: List[Path] = []
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.part*"):
            owner, pid = _temporary_owner(path.name)
            if owner in names and (pid is None or not _process_alive(pid)) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _write_error(path: Path, exc: OSError) -> OSError:
    """``exc`` reworded to name the output ``path`` (not its temporary); the errno, and so the
    subclass (``PermissionError``, ``IsADirectoryError`` ...), is kept."""
    reason = exc.strerror or str(exc)
    message = f"cannot write {str(path)!r}: {reason}"
    if exc.errno is not None:
        return OSError(exc.errno, message)
    try:
        return type(exc)(message)
    except TypeError:  # a subclass with another constructor
        return OSError(message)


#: ``errno`` values after which no other file of the same folder can be written either.
_FATAL_WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM") if hasattr(errno, name)
)


def is_write_fatal(exc: OSError) -> bool:
    """Whether a failed write means the next ones will fail too (no space or quota, a read-only
    file system, no permission), so that a loop over many outputs should stop rather than fail
    each in turn."""
    return exc.errno in _FATAL_WRITE_ERRNOS


def check_writable_folder(folder: Union[str, os.PathLike], name: str = "folder") -> Path:
    """Create ``folder`` if needed and check that a file can be created in it (and removed), so a
    loop over many outputs fails before its first one. ``OSError`` naming ``name`` and the folder
    otherwise (the subclass and errno of the cause)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary_path(folder / ".ivfusion-write-check").unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        message = f"{name}: cannot write into {str(folder)!r}: {reason}"
        raise (OSError(exc.errno, message) if exc.errno is not None else OSError(message)) from exc
    return folder


def check_output_file(path: Union[str, os.PathLike]) -> Path:
    """``path`` as a :class:`~pathlib.Path`; ``IsADirectoryError`` naming it when it is a directory."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {str(path)!r}: it is a directory; give a file path")
    return path


def write_atomic(path: Union[str, os.PathLike], write: Callable[[str], None], *, suffix: str = ".part") -> Path:
    """Create or replace ``path`` atomically: ``write(tmp)`` fills a temporary file next to ``path``
    (:func:`temporary_path`), which is then flushed to disk and renamed over ``path``.

    An interrupted or failing ``write`` never leaves a partial file under ``path`` (the temporary
    file is removed). The file gets the usual mode (``0666`` less the umask). ``suffix`` ends the
    temporary name (writers that pick a format from the extension need it, e.g. ``".part.png"``).

    Raises:
        OSError: the file cannot be written (a read-only or full disk, no permission, ``path`` is a
            directory ...): the same subclass and errno, with a message naming ``path``.
    """
    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path, suffix)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        write(str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    return path


def write_image(path: Union[str, os.PathLike], image: np.ndarray) -> Path:
    """Write an image atomically (:func:`write_atomic`).

    An interrupted or failing write never leaves a partial file under ``path``. ``uint8`` and
    ``uint16`` arrays are written as they are; float arrays in [0, 1] are stored as 8-bit.
    The format follows the extension of ``path``.
    """
    path = check_output_file(path)
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"output: unknown image extension {path.suffix!r} for {str(path)!r}")
    pil = _pil_for_array(np.asarray(image))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            pil.save(fh, format=fmt)

    return write_atomic(path, write, suffix=f".part{ext}")


_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")


def save_image(path: Union[str, os.PathLike], image: np.ndarray, *, bits: Optional[int] = None) -> Path:
    """Save an image (e.g. what :func:`ivfusion.fuse` returns) atomically, as the CLI does.

    The format follows the extension (``.png``, ``.jpg``, ``.tif`` ...). A crash or an error while
    writing never leaves a partial file under ``path`` nor touches an existing one.

    Args:
        path: the file to create or replace; missing parent folders are created.
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` numpy array: ``uint8``, ``uint16``, or float
            in [0, 1].
        bits: ``None`` keeps the array's depth (``uint8`` -> 8-bit, ``uint16`` -> 16-bit, float
            -> 8-bit); ``8`` or ``16`` converts (``16`` needs a grey image and PNG or TIFF).

    Returns:
        The path written.

    Raises:
        TypeError: ``image`` is not a numpy array of a supported dtype.
        ValueError: bad shape, float values outside [0, 1] or not finite, bad ``bits``, an unknown
            extension, or 16 bits requested for a colour image or a format without 16-bit grey.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a numpy array, got {type(image).__name__}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))) or 0 in image.shape:
        raise ValueError(f"image: expected a non-empty HxW, HxWx1 or HxWx3 array, got shape {image.shape}")
    if bits not in (None, 8, 16):
        raise ValueError(f"bits: expected None, 8 or 16, got {bits!r}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
            raise ValueError("image: float images must hold finite values in [0, 1]")
        unit = image.astype(np.float64)
    elif image.dtype in (np.uint8, np.uint16):
        unit = None
    else:
        raise TypeError(f"image: expected uint8, uint16 or float data, got {image.dtype}")
    target = bits or (16 if image.dtype == np.uint16 else 8)
    if target == 16:
        fmt = Image.registered_extensions().get(Path(path).suffix.lower())
        if image.ndim == 3:
            raise ValueError("bits: 16-bit files can only hold grey images (Pillow writes no 16-bit colour)")
        if fmt not in _SIXTEEN_BIT_FORMATS:
            raise ValueError(f"bits: 16-bit grey needs a .png or .tif path, got {str(path)!r}")
    if unit is None and image.dtype == (np.uint16 if target == 16 else np.uint8):
        out = image
    else:
        if unit is None:
            unit = image.astype(np.float64) / np.iinfo(image.dtype).max
        top = 65535 if target == 16 else 255
        out = np.round(unit * top).astype(np.uint16 if target == 16 else np.uint8)
    return write_image(path, out)


def images_by_stem(folder: Path, name: str) -> Dict[str, Path]:
    """``{stem: path}`` of the image files of ``folder`` (hidden files skipped); ``ValueError`` when two
    share a stem, ``FileNotFoundError`` naming the argument ``name`` when the folder is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: no such directory: {str(folder)!r}")
    found: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            if path.stem in found:
                raise ValueError(
                    f"{name}: two images share the stem {path.stem!r}: {found[path.stem].name}, {path.name}"
                )
            found[path.stem] = path
    return found


def pair_files(
    ir_dir: Union[str, os.PathLike], vis_dir: Union[str, os.PathLike]
) -> Tuple[List[Tuple[str, Path, Path]], List[Path], List[Path]]:
    """Pair the images of two folders by file stem (``FLIR_001.jpg`` <-> ``FLIR_001.png``).

    Returns ``(pairs, unmatched_ir, unmatched_vis)`` with ``pairs`` as ``(stem, ir, vis)`` sorted by stem.
    """
    irs = images_by_stem(Path(ir_dir), "ir_dir")
    viss = images_by_stem(Path(vis_dir), "vis_dir")
    pairs = [(s, irs[s], viss[s]) for s in sorted(irs.keys() & viss.keys())]
    return (
        pairs,
        [irs[s] for s in sorted(irs.keys() - viss.keys())],
        [viss[s] for s in sorted(viss.keys() - irs.keys())],
    )
