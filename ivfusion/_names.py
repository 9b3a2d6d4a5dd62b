"""The error for an unknown name (method, network, sample, weight): what was asked, the closest
known names ("did you mean ...", by :func:`difflib.get_close_matches`) and every known name."""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["unknown_name"]


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """``"unknown method 'refinefus'; did you mean 'refinefuse'? available: a, b, ..."``.

    Args:
        kind: what ``name`` should have been, e.g. ``"method"``.
        name: the name given (any object; shown with ``repr``).
        known: the valid names, in the order to list them.

    The suggestion is dropped when nothing is close (similarity ratio below 0.6) or ``name`` is
    not a string.
    """
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6) if isinstance(name, str) else []
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} available: {', '.join(known)}"
