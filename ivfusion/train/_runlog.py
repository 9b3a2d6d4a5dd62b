"""A training run's log: ``train_log.csv`` and ``train_log.jsonl`` with a fixed column set."""
from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

__all__ = ["RunLog"]


class RunLog:
    """CSV + JSON-lines log with a fixed column set."""

    def __init__(self, out: Path, columns: Sequence[str], enabled: bool = True) -> None:
        self.enabled = enabled  # only rank 0 writes the files under torchrun
        self.csv_path = out / "train_log.csv"
        self.jsonl_path = out / "train_log.jsonl"
        self.columns = list(columns)
        self.rows: List[Dict[str, Any]] = []

    def truncate_after(self, step: int) -> None:
        """Drop rows of steps after ``step`` (written by a run that is being resumed)."""
        if not self.enabled:
            return
        kept: List[str] = []
        if self.jsonl_path.is_file():
            for line in self.jsonl_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    row = json.loads(line)
                    # end-of-run rows (DIDFuse's rule comparison) are written again when the run ends
                    if row.get("step", 0) <= step and not str(row.get("kind", "")).startswith("val_rule"):
                        kept.append(line)
        self.jsonl_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        with open(self.csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore", restval="")
            writer.writeheader()
            for line in kept:
                writer.writerow(json.loads(line))

    def start(self, fresh: bool) -> None:
        if self.enabled and (fresh or not self.csv_path.is_file()):
            with open(self.csv_path, "w", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, fieldnames=self.columns).writeheader()
            self.jsonl_path.write_text("", encoding="utf-8")

    def write(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore", restval="").writerow(row)
        with open(self.jsonl_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
