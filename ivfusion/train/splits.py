"""Validation splits held back from the training folders.

A split names, per domain, the file stems of pairs that must never be trained on. The domain is
the name of the training folder that holds the pairs (``tno``, ``msrs``, ``llvip``, ``roadscene``
in ``shared/data/ivif/train/``). The bundled split ``"mixed"`` (``mixed_val.json`` beside this
module; its ``description`` says how it was drawn) holds back 30 pairs from four domains so that
checkpoint selection sees daytime, night, urban, road and military scenes alike.

* :func:`load_split` reads a split by name or from a JSON file of the same layout.
* :func:`split_pairs` finds a split's pairs in a list of training folders, by domain.
* :func:`exclude_split` drops a split's pairs from a list of training pairs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from .data import PairFiles, find_pairs

__all__ = ["ValSplit", "SPLITS", "load_split", "split_pairs", "exclude_split"]

#: Bundled splits, by name.
SPLITS: Dict[str, Path] = {"mixed": Path(__file__).with_name("mixed_val.json")}


@dataclass(frozen=True)
class ValSplit:
    """Held-back stems per domain (= training folder name)."""

    name: str
    domains: Dict[str, Tuple[str, ...]]
    description: str = ""

    def holds(self, pair: PairFiles) -> bool:
        """Whether ``pair`` (from a folder named like a domain) belongs to the split."""
        return pair.stem in self.domains.get(Path(pair.folder).name, ())


def load_split(split: Union[str, os.PathLike, ValSplit]) -> ValSplit:
    """A bundled split by name (``"mixed"``), or a JSON file ``{"domains": {folder: [stems]}}``.

    Raises:
        FileNotFoundError: neither a bundled name nor an existing file.
        ValueError: the file's layout is wrong.
    """
    if isinstance(split, ValSplit):
        return split
    path = SPLITS.get(str(split), Path(split).expanduser())
    if not path.is_file():
        raise FileNotFoundError(f"val_split: expected one of {sorted(SPLITS)} or a JSON file, got {str(split)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"val_split: {str(path)!r} is not valid JSON ({e})") from None
    domains = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(domains, dict) or not domains or not all(
        isinstance(k, str) and isinstance(v, list) and v and all(isinstance(s, str) for s in v)
        for k, v in domains.items()
    ):
        raise ValueError(f"val_split: {str(path)!r} must hold {{\"domains\": {{folder name: [file stems, ...]}}}}")
    return ValSplit(name=str(data.get("name", path.stem)), domains={k: tuple(v) for k, v in domains.items()},
                    description=str(data.get("description", "")))


def split_pairs(split: Union[str, ValSplit], folders: Sequence[Union[str, os.PathLike]]) -> Dict[str, List[PairFiles]]:
    """The split's pairs found in ``folders``, by domain, in the split's order.

    A domain whose folder is not among ``folders`` is left out; a listed stem missing from its
    folder is an error (the split and the data disagree).
    """
    split = load_split(split)
    out: Dict[str, List[PairFiles]] = {}
    for folder in folders:
        name = Path(folder).expanduser().name
        if name not in split.domains:
            continue
        by_stem = {p.stem: p for p in find_pairs(folder)}
        missing = [s for s in split.domains[name] if s not in by_stem]
        if missing:
            raise ValueError(f"val_split {split.name!r}: {len(missing)} pair(s) of domain {name!r} are not in "
                             f"{str(folder)!r}: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        out[name] = [by_stem[s] for s in split.domains[name]]
    return out


def exclude_split(pairs: Sequence[PairFiles], split: Union[str, ValSplit]) -> List[PairFiles]:
    """``pairs`` without those the split holds back."""
    split = load_split(split)
    return [p for p in pairs if not split.holds(p)]
