"""Progress bars: :mod:`tqdm` (installed with ``huggingface_hub``), shown only on a terminal."""
from __future__ import annotations

import sys
from typing import Optional, TextIO

from tqdm import tqdm  # not tqdm.auto: bars show only on a terminal, so Jupyter needs no widget (and no warning)

__all__ = ["progress_bar"]


def progress_bar(total: Optional[int], desc: str, *, unit: str = "it", enabled: bool = True,
                 file: Optional[TextIO] = None) -> tqdm:
    """A ``tqdm`` bar on ``file`` (default stderr); a silent one when ``enabled`` is false or ``file``
    is not a terminal (logs and CI stay clean). Use ``bar.update(n)``, ``bar.set_postfix(...)``,
    ``bar.close()`` or ``with progress_bar(...) as bar``."""
    stream = file if file is not None else sys.stderr
    shown = enabled and bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not shown, dynamic_ncols=True)
