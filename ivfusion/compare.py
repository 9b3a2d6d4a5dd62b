"""Side-by-side comparison grids of fusion methods (``ivfusion compare``).

:func:`compare_grid` fuses a few pairs with several methods and writes one labelled PNG (or
JPEG, ...): one row per pair, the columns ``infrared``, ``visible``, then one per method.
:func:`pairs_from_folder` and :func:`pairs_from_split` build its list of pairs from a data folder
or from a validation split (``"mixed"``).

Layout (all sizes in pixels; ``R`` rows, ``C = 2 + len(methods)`` columns, cell side ``cell``)::

    width  = LABEL_WIDTH   + GAP + C * (cell + GAP)
    height = HEADER_HEIGHT + GAP + R * (cell + GAP)

The cell of row ``r``, column ``c`` has its top-left corner at
``(LABEL_WIDTH + GAP + c * (cell + GAP), HEADER_HEIGHT + GAP + r * (cell + GAP))`` (x, y); see
:func:`grid_size` and :func:`cell_origin`.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ._names import unknown_name
from ._progress import progress_bar
from .color import rgb_to_luma
from .fusion import _method_fn, _resolve_device, fuse, list_methods
from .io import (
    ImageLike,
    check_unit_float,
    from_unit_range,
    is_grey,
    is_same_file,
    pair_files,
    to_chw_tensor,
    to_unit_range,
    write_image,
)
from .train.splits import ValSplit, load_split, split_pairs

__all__ = [
    "compare_grid",
    "pairs_from_folder",
    "pairs_from_split",
    "grid_size",
    "cell_origin",
    "Pair",
    "HEADER_HEIGHT",
    "LABEL_WIDTH",
    "GAP",
    "FONT_SIZE",
    "MIN_CELL",
    "MAX_LABEL_CHARS",
    "BACKGROUND",
    "CELL_BACKGROUND",
]

#: One row of the grid: ``(label, infrared, visible)``; the images are anything :func:`ivfusion.fuse` accepts.
Pair = Tuple[str, ImageLike, ImageLike]

#: Height in pixels of the strip of column labels above the cells.
HEADER_HEIGHT = 28
#: Width in pixels of the strip of row labels left of the cells.
LABEL_WIDTH = 168
#: Pixels between neighbouring cells and between the cells and the strips / outer border.
GAP = 4
#: Text size in pixels (Pillow's built-in font, ``ImageFont.load_default``).
FONT_SIZE = 14
#: Smallest accepted ``cell``.
MIN_CELL = 16
#: Labels made by :func:`pairs_from_folder` / :func:`pairs_from_split` are cut to this many characters.
MAX_LABEL_CHARS = 64
#: Colour of the strips and gaps (RGB).
BACKGROUND = (255, 255, 255)
#: Colour around an image that does not fill its square cell (RGB).
CELL_BACKGROUND = (128, 128, 128)
_TEXT = (0, 0, 0)
_PAD = 6  # text padding inside the strips
_FIXED_COLUMNS = ("infrared", "visible")


# --------------------------------------------------------------------------------------------
# Geometry


def grid_size(rows: int, columns: int, cell: int) -> Tuple[int, int]:
    """``(width, height)`` in pixels of a grid of ``rows`` x ``columns`` cells of side ``cell``.

    ``columns`` counts every column, the infrared and visible ones included.
    """
    return LABEL_WIDTH + GAP + columns * (cell + GAP), HEADER_HEIGHT + GAP + rows * (cell + GAP)


def cell_origin(row: int, column: int, cell: int) -> Tuple[int, int]:
    """``(x, y)`` in pixels of the top-left corner of a cell (row and column counted from 0)."""
    return LABEL_WIDTH + GAP + column * (cell + GAP), HEADER_HEIGHT + GAP + row * (cell + GAP)


# --------------------------------------------------------------------------------------------
# Building the list of pairs


def _short_label(text: str, max_chars: int = MAX_LABEL_CHARS) -> str:
    """``text`` cut in the middle to ``max_chars`` (the end of a stem often tells frames apart)."""
    if len(text) <= max_chars:
        return text
    keep = max_chars - 3
    head = (keep + 1) // 2
    return text[:head] + "..." + text[len(text) - (keep - head):]


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected a positive int or None, got {limit!r}")


def _select_stems(pairs: List[Tuple[str, Any, Any]], stems: Optional[Sequence[str]], where: str
                  ) -> List[Tuple[str, Any, Any]]:
    """The pairs named in ``stems``, in that order; ``ValueError`` (with close matches) for a stem not there."""
    if stems is None:
        return pairs
    if isinstance(stems, str):
        stems = [stems]
    by_stem = {p[0]: p for p in pairs}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise ValueError(f"stems: {unknown_name('pair', missing[0], sorted(by_stem))} (in {where})")
    return [by_stem[s] for s in dict.fromkeys(stems)]


def pairs_from_folder(
    folder_or_ir_dir: Union[str, os.PathLike],
    vis_dir: Optional[Union[str, os.PathLike]] = None,
    limit: Optional[int] = None,
    stems: Optional[Sequence[str]] = None,
) -> List[Pair]:
    """The pairs of a data folder, as ``(stem, ir_path, vis_path)`` sorted by stem.

    Args:
        folder_or_ir_dir: a folder with ``ir/`` and ``vi/`` sub-folders, or (with ``vis_dir``)
            the folder of infrared images.
        vis_dir: the folder of visible images; ``None`` to use ``folder_or_ir_dir/vi``.
        limit: keep only the first ``limit`` pairs (by stem, after ``stems``).
        stems: only the pairs with these file stems, in this order (e.g. ``["carLight", "kettle"]``).

    Images are matched by file stem (:func:`ivfusion.fusion.pair_files`); images without a partner
    are skipped with a warning. Labels longer than :data:`MAX_LABEL_CHARS` are cut in the middle.

    Raises:
        FileNotFoundError: a folder (or its ``ir/``/``vi/`` sub-folder) does not exist.
        ValueError: no pair matched, a stem of ``stems`` has no pair (the message names the closest
            ones), or a bad ``limit``.
    """
    _check_limit(limit)
    root = Path(folder_or_ir_dir).expanduser()
    if vis_dir is None:
        for sub in ("ir", "vi"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(
                    f"folder: {str(root)!r} has no {sub}/ sub-folder; give a folder with ir/ and vi/, "
                    "or an infrared folder and vis_dir"
                )
        ir_dir, vis = root / "ir", root / "vi"
    else:
        ir_dir, vis = root, Path(vis_dir).expanduser()
    pairs, lone_ir, lone_vis = pair_files(ir_dir, vis)
    if lone_ir or lone_vis:
        warnings.warn(f"{ir_dir} / {vis}: skipping {len(lone_ir)} infrared and {len(lone_vis)} visible "
                      "image(s) without a partner", stacklevel=2)
    if not pairs:
        raise ValueError(f"no image pairs with matching file stems in {str(ir_dir)!r} and {str(vis)!r}")
    pairs = _select_stems(pairs, stems, f"{str(ir_dir)!r} and {str(vis)!r}")
    return [(_short_label(stem), ir, v) for stem, ir, v in pairs[:limit]]


def pairs_from_split(
    split: Union[str, os.PathLike, ValSplit],
    data_folders: Sequence[Union[str, os.PathLike]],
    domain: Optional[str] = None,
    limit: Optional[int] = None,
    stems: Optional[Sequence[str]] = None,
) -> List[Pair]:
    """The pairs of a validation split (:mod:`ivfusion.train.splits`), labelled ``"<domain>/<stem>"``.

    Args:
        split: ``"mixed"`` (bundled), a JSON file ``{"domains": {folder name: [stems]}}`` or a
            :class:`~ivfusion.train.splits.ValSplit`.
        data_folders: training folders (each with ``ir/`` and ``vi/``); a folder's name is its domain.
        domain: only this domain (e.g. ``"tno"``); ``None`` for all domains found in ``data_folders``.
        limit: at most this many pairs **per domain** (the first ones in the split's order).
        stems: only these pairs, in this order, each given as ``"<domain>/<stem>"`` or a bare stem.

    Labels longer than :data:`MAX_LABEL_CHARS` are cut in the middle.

    Raises:
        FileNotFoundError: unknown split, or a folder / its ``ir/``/``vi/`` missing.
        ValueError: no folder is a domain of the split, ``domain`` is not among them, a stem of the
            split is missing from its folder, or a bad ``limit``.
    """
    _check_limit(limit)
    if isinstance(data_folders, (str, os.PathLike)):
        data_folders = [data_folders]
    split = load_split(split)
    if domain is not None and domain not in split.domains:
        raise ValueError(f"domain: split {split.name!r} has no domain {domain!r}; it has "
                         f"{', '.join(split.domains)}")
    folders = [f for f in data_folders if domain is None or Path(f).expanduser().name == domain]
    found = split_pairs(split, folders)
    if not found:
        wanted = repr(domain) if domain is not None else "any of " + ", ".join(split.domains)
        given = ", ".join(str(f) for f in data_folders) or "none"
        raise ValueError(f"data_folders: no folder named {wanted} (the domains of split {split.name!r}); "
                         f"given: {given}")
    if stems is not None:
        everything = [(f"{name}/{p.stem}", p.ir, p.vis) for name, pairs in found.items() for p in pairs]
        by_bare = {label.split("/", 1)[1]: label for label, _, _ in everything}
        wanted = [by_bare.get(s, s) for s in ([stems] if isinstance(stems, str) else stems)]
        return [(_short_label(label), ir, vis)
                for label, ir, vis in _select_stems(everything, wanted, f"split {split.name!r}")[:limit]]
    return [(_short_label(f"{name}/{p.stem}"), p.ir, p.vis)
            for name, pairs in found.items() for p in pairs[:limit]]


# --------------------------------------------------------------------------------------------
# Preparing images


def _load(image: ImageLike, name: str) -> Tuple[np.ndarray, str]:
    """Any image -> ``(H, W)`` or ``(H, W, 3)`` numpy array in its own dtype, and its kind."""
    t, kind = to_chw_tensor(image, name=name)
    if kind == "float":
        check_unit_float(t, name=name)  # before shrinking could hide values outside [0, 1]
    arr = t.cpu().numpy()
    arr = arr.astype(np.uint16) if kind == "uint16" else arr.astype(np.float32, copy=False) if kind == "float" else arr
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return np.ascontiguousarray(arr), kind


def _shrink(arr: np.ndarray, kind: str, max_side: Optional[int]) -> np.ndarray:
    """Shrink so that the longer side is at most ``max_side`` (box filter = pixel-area average)."""
    h, w = arr.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return arr
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL order (W, H)
    planes = arr[..., None] if arr.ndim == 2 else arr
    out = np.stack([np.asarray(Image.fromarray(planes[..., c].astype(np.float32), mode="F").resize(size, Image.BOX))
                    for c in range(planes.shape[-1])], axis=-1)
    out = out[..., 0] if arr.ndim == 2 else out
    if kind == "float":
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    top = 255 if kind == "uint8" else 65535
    return np.clip(np.round(out), 0, top).astype(arr.dtype)


def _display(arr: np.ndarray, kind: str, *, infrared: bool = False) -> np.ndarray:
    """An image as 8-bit for the grid. The infrared is shown grey (its BT.601 luma if colour),
    16-bit infrared mapped by its own min..max as :func:`ivfusion.fuse` does by default."""
    t, _ = to_chw_tensor(arr)
    x = to_unit_range(t, kind, value_range="auto" if infrared and kind == "uint16" else None)
    if infrared and x.shape[0] == 3:
        x = x[:1] if is_grey(x) else rgb_to_luma(x)[None].clamp_(0.0, 1.0)
    return from_unit_range(x, "uint8")


# --------------------------------------------------------------------------------------------
# Drawing


@functools.lru_cache(maxsize=None)
def _font() -> Any:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # scalable built-in font (Pillow >= 10.1)
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _fit(text: str, width: float) -> str:
    """``text``, cut at the end with "..." so that it is at most ``width`` pixels long."""
    font = _font()
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _wrap(text: str, width: float, max_lines: int) -> List[str]:
    """Break ``text`` into lines of at most ``width`` pixels, preferably after ``/ _ - space``."""
    font = _font()
    lines: List[str] = []
    rest = text
    while rest and len(lines) < max_lines:
        n = 1
        while n < len(rest) and font.getlength(rest[: n + 1]) <= width:
            n += 1
        if n < len(rest):
            cut = max(rest.rfind(c, 0, n) for c in "/_- ")
            if cut + 1 >= n // 2:
                n = cut + 1
        lines.append(rest[:n])
        rest = rest[n:]
    if rest:
        lines[-1] = _fit(lines[-1] + rest, width)
    return lines


def _line_height() -> int:
    top, bottom = _font().getbbox("Hg")[1::2]
    return int(bottom - top) + 4


def _draw_header(draw: ImageDraw.ImageDraw, titles: Sequence[str], cell: int) -> None:
    font = _font()
    top, bottom = font.getbbox("Hg")[1::2]  # one baseline for all titles, whatever their letters
    y = (HEADER_HEIGHT + GAP - (bottom - top)) / 2 - top
    for c, title in enumerate(titles):
        text = _fit(title, cell)
        x, _ = cell_origin(0, c, cell)
        draw.text((x + (cell - font.getlength(text)) / 2, y), text, fill=_TEXT, font=font)


def _draw_row_label(draw: ImageDraw.ImageDraw, label: str, row: int, cell: int) -> None:
    line_h = _line_height()
    lines = _wrap(label, LABEL_WIDTH - 2 * _PAD, max(1, cell // line_h))
    _, y = cell_origin(row, 0, cell)
    y += (cell - line_h * len(lines)) / 2
    for line in lines:
        draw.text((_PAD, y), line, fill=_TEXT, font=_font())
        y += line_h


def _paste_cell(canvas: Image.Image, image: np.ndarray, row: int, column: int, cell: int) -> None:
    """Resize ``image`` (aspect kept, Lanczos) to fit the ``cell`` square and centre it there."""
    pil = Image.fromarray(image)
    scale = min(cell / pil.width, cell / pil.height)
    size = (max(1, min(cell, round(pil.width * scale))), max(1, min(cell, round(pil.height * scale))))
    if size != pil.size:
        pil = pil.resize(size, Image.LANCZOS)
    x, y = cell_origin(row, column, cell)
    canvas.paste(pil.convert("RGB"), (x + (cell - size[0]) // 2, y + (cell - size[1]) // 2))


# --------------------------------------------------------------------------------------------
# compare_grid


def _check_size(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name}: expected an int >= {minimum} (pixels){extra}, got {value!r}")


def _split_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``"method"`` -> ``(method, None)``; ``"method@weight"`` -> ``(method, weight)``."""
    method, _, weight = str(spec).partition("@")
    return method, (weight or None)


def compare_grid(
    pairs: Sequence[Pair],
    methods: Union[str, Sequence[str]],
    out: Union[str, os.PathLike],
    *,
    cell: int = 256,
    max_side: Optional[int] = 640,
    weights: Optional[Mapping[str, Union[str, os.PathLike]]] = None,
    device: Optional[Union[str, torch.device]] = None,
    precision: Optional[str] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Fuse each pair with each method and write a labelled comparison grid image.

    Rows are the pairs, in the given order; columns are ``infrared``, ``visible``, then one per
    method in the given order. A header strip on top names the columns, a strip on the left names
    the rows (each pair's label, wrapped, cut with "..." if it does not fit). Each image is resized
    (aspect ratio kept, Lanczos) to fit a ``cell`` x ``cell`` square and centred on
    :data:`CELL_BACKGROUND`. The infrared is shown grey (16-bit infrared by its own min..max, as
    :func:`ivfusion.fuse` maps it); the visible image and the fused ones in colour when the visible
    image is colour. The grid is ``grid_size(len(pairs), 2 + len(methods), cell)`` pixels
    (module docstring for the rule).

    **Inputs are shrunk before fusing**: each pair is reduced with a box (pixel-area) filter so
    that its longer side is at most ``max_side`` pixels, and every column shows that reduced pair.
    A grid of slow networks on large images thus stays cheap; the fused images are those of the
    reduced inputs, not downscaled full-resolution results (networks see coarser detail). Pass
    ``max_side=None`` to fuse at full size.

    Args:
        pairs: ``(label, ir, vis)`` tuples; ``ir``/``vis`` are anything :func:`ivfusion.fuse`
            accepts (paths, PIL images, arrays, tensors) and must have the same size.
        methods: fusion method names (:func:`ivfusion.list_methods`), each fused once per pair;
            ``"method@weight"`` (a weight name or ``.safetensors`` path) compares a given weight,
            so several weights of one network can stand side by side (titled ``method@file-stem``).
        out: the image to write; its extension picks the format (``.png``, ``.jpg`` ...).
        cell: side of a cell's square in pixels (at least :data:`MIN_CELL`).
        max_side: longer side in pixels the pairs are shrunk to before fusing; ``None`` = full size.
        weights: per-method weights, ``{method: weight name or .safetensors path}``; methods not
            in it use their default weights.
        device: ``"cpu"``, ``"cuda"`` ...; default CUDA when available.
        precision: ``"fp32"``, ``"fp16"`` (CUDA) or ``"bf16"``; default as in :func:`ivfusion.fuse`.
        overwrite: replace ``out`` if it exists.
        progress: a ``tqdm`` bar over the fusions (pairs x methods) on stderr when stderr is a
            terminal (default, as in :func:`ivfusion.fuse_dir`); ``False``: none.

    Returns:
        The path written. The file is written atomically (:func:`ivfusion.io.write_image`:
        temporary file, then rename), so an interrupted run leaves no partial image.

    Raises:
        ValueError: empty ``pairs`` or ``methods``, an unknown or repeated method, ``weights`` for
            a method that is not compared, bad ``cell``/``max_side``, an unknown ``out``
            extension, ``out`` being one of the input files or a directory, ir/vis size mismatch.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        RuntimeError: a network whose pretrained weights are not available.
        FileNotFoundError, TypeError: unreadable inputs, as in :func:`ivfusion.fuse`.
    """
    _check_size("cell", cell, MIN_CELL)
    _check_size("max_side", max_side, 1, allow_none=True)
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError("methods: expected at least one fusion method")
    known = list_methods()
    for m in methods:
        if _split_spec(m)[0] not in known:
            raise ValueError(f"methods: {unknown_name('method', _split_spec(m)[0], known)} "
                             "(or METHOD@WEIGHT for a given weight)")
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise ValueError(f"methods: {', '.join(map(repr, repeated))} given more than once")
    weights = dict(weights or {})
    stray = sorted(set(weights) - set(methods))
    if stray:
        raise ValueError(f"weights: given for {', '.join(map(repr, stray))}, which is not among methods")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one (label, ir, vis) pair")
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise ValueError(f"pairs[{i}]: expected a (label, ir, vis) tuple, got {type(p).__name__}")

    out = Path(out).expanduser()
    if Image.registered_extensions().get(out.suffix.lower()) is None:
        raise ValueError(f"out: unknown image extension {out.suffix!r} for {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a directory")
    target = out.resolve()
    for i, (_, ir, vis) in enumerate(pairs):
        for name, src in (("ir", ir), ("vis", vis)):
            if isinstance(src, (str, os.PathLike)) and is_same_file(target, src):
                raise ValueError(f"out: {str(out)!r} is an input image (pairs[{i}] {name}); choose another path")
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {str(out)!r} exists; pass overwrite=True to replace it")
    # Build every method first (weights, device, precision), so errors come before any fusing.
    dev = _resolve_device(device)
    columns = []  # (title, method, weight)
    for m in methods:
        method, weight = _split_spec(m)
        weight = weight if weight is not None else weights.get(m)
        _method_fn(method, weight, dev, precision, {})
        title = m if weight is None or "@" not in m else f"{method}@{Path(weight).stem}"
        columns.append((title, method, weight))

    titles = [*_FIXED_COLUMNS, *(c[0] for c in columns)]
    canvas = Image.new("RGB", grid_size(len(pairs), len(titles), cell), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_header(draw, titles, cell)
    with progress_bar(len(pairs) * len(columns), "fusing", unit="image", enabled=progress) as bar:
        for r, (label, ir, vis) in enumerate(pairs):
            _draw_row(canvas, draw, r, str(label), ir, vis, columns, cell, max_side, device, precision, bar)
    return write_image(out, np.asarray(canvas))


def _draw_row(canvas: Image.Image, draw: ImageDraw.ImageDraw, r: int, label: str, ir: ImageLike, vis: ImageLike,
              columns: Sequence[Tuple[str, str, Optional[str]]], cell: int, max_side: Optional[int],
              device: Optional[Union[str, torch.device]], precision: Optional[str], bar: Any) -> None:
    """Row ``r`` of the grid: the pair's label, its infrared and visible images, one fused image per column."""
    ir_arr, ir_kind = _load(ir, f"pairs[{r}] ir")
    vis_arr, vis_kind = _load(vis, f"pairs[{r}] vis")
    if ir_arr.shape[:2] != vis_arr.shape[:2]:
        raise ValueError(f"pairs[{r}] ({label!r}): ir is {ir_arr.shape[0]}x{ir_arr.shape[1]} (HxW), vis is "
                         f"{vis_arr.shape[0]}x{vis_arr.shape[1]}; the pair must be aligned")
    ir_arr, vis_arr = _shrink(ir_arr, ir_kind, max_side), _shrink(vis_arr, vis_kind, max_side)
    for c in range(len(columns) + len(_FIXED_COLUMNS)):
        x, y = cell_origin(r, c, cell)
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=CELL_BACKGROUND)
    _draw_row_label(draw, label, r, cell)
    _paste_cell(canvas, _display(ir_arr, ir_kind, infrared=True), r, 0, cell)
    _paste_cell(canvas, _display(vis_arr, vis_kind), r, 1, cell)
    for c, (_, method, weight) in enumerate(columns, start=2):
        fused = fuse(ir_arr, vis_arr, method=method, weights=weight, device=device, precision=precision)
        _paste_cell(canvas, _display(fused, vis_kind), r, c, cell)
        bar.update(1)
