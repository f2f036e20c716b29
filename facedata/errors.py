"""User-facing errors and the rejects report: every bad input item is named by file, line and field."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path


class FacedataError(Exception):
    """An error the CLI prints as one clear line, without a traceback."""


class InputError(FacedataError):
    """A bad item in an input file, located by file, line number (1-based) and field."""

    def __init__(self, file: str | os.PathLike[str], line: int | None, field: str, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.message = message
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {field}: {message}")


@dataclass(frozen=True)
class Reject:
    file: str
    line: int | None
    field: str
    reason: str


@dataclass
class Rejects:
    """Collects skipped items; with `strict` the first one raises instead."""

    strict: bool = False
    items: list[Reject] = field(default_factory=list)

    def reject(self, file: str | os.PathLike[str], line: int | None, field: str, reason: str) -> None:
        if self.strict:
            raise InputError(file, line, field, reason)
        self.items.append(Reject(str(file), line, field, reason))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        if not self.items:
            return "no items skipped"
        by_field: dict[str, int] = {}
        for item in self.items:
            by_field[item.field] = by_field.get(item.field, 0) + 1
        detail = ", ".join(f"{n} {name}" for name, n in sorted(by_field.items()))
        return f"skipped {len(self.items)} item(s) ({detail})"

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write every skipped item as file,line,field,reason (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "line", "field", "reason"])
            for item in self.items:
                writer.writerow([item.file, "" if item.line is None else item.line, item.field, item.reason])
        os.replace(tmp, path)
