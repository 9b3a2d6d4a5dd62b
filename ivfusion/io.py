"""Reading, normalising and writing images.

Every public entry point of ivfusion accepts the same image kinds (:data:`ImageLike`): a file
path, a PIL image, a numpy array (``H x W``, ``H x W x 1`` or ``H x W x 3``; ``uint8``,
``uint16`` or float in [0, 1]) or a torch tensor (``H x W``, ``C x H x W`` or ``1 x C x H x W``
with ``C`` in {1, 3}). This module turns them into one canonical form, a ``(C, H, W)`` tensor,
and back.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

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
        ValueError: the file is not a readable image.
    """
    path = Path(path)
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


def _array_to_chw(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[2] in (1, 3):
        return np.moveaxis(arr, 2, 0)
    raise ValueError(
        f"{name}: expected an array of shape HxW, HxWx1 or HxWx3, got {arr.shape}"
    )


def _tensor_to_chw(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"{name}: expected a tensor of shape HxW, CxHxW or 1xCxHxW with C in (1, 3), "
            f"got {tuple(t.shape)}"
        )
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
        ValueError: unsupported shape.
        FileNotFoundError: a path that does not exist.
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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Union[str, os.PathLike], write: Callable[[str], None], *, suffix: str = ".part") -> Path:
    """Create or replace ``path`` atomically: ``write(tmp)`` fills a temporary file next to ``path``,
    which is then flushed to disk and renamed over ``path``.

    An interrupted or failing ``write`` never leaves a partial file under ``path`` (the temporary
    file is removed). The file gets the usual mode (``0666`` less the umask). ``suffix`` ends the
    temporary name (writers that pick a format from the extension need it, e.g. ``".part.png"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_image(path: Union[str, os.PathLike], image: np.ndarray) -> Path:
    """Write an image atomically (:func:`write_atomic`).

    An interrupted or failing write never leaves a partial file under ``path``. ``uint8`` and
    ``uint16`` arrays are written as they are; float arrays in [0, 1] are stored as 8-bit.
    The format follows the extension of ``path``.
    """
    path = Path(path)
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
