"""User-facing errors and the rejects report: every bad input item is named by file, line and field."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field


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
    kind: str  # what went wrong, for the summary (e.g. "missing image"); the field when not given

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class Rejects:
    """Collects skipped items; with `strict` the first one raises instead. A repaired item (`fatal=False`,
    e.g. an identical repeated face kept once) is recorded but never stops a strict run: the official
    WIDER files hold such repeats."""

    strict: bool = False
    items: list[Reject] = field(default_factory=list)

    def reject(
        self, file: str | os.PathLike[str], line: int | None, field: str, reason: str, kind: str = "",
        fatal: bool = True,
    ) -> None:
        if self.strict and fatal:
            raise InputError(file, line, field, reason)
        self.items.append(Reject(str(file), line, field, reason, kind or field))

    def __len__(self) -> int:
        return len(self.items)

    def count(self, kind: str) -> int:
        return sum(1 for item in self.items if item.kind == kind)

    def by_kind(self) -> dict[str, list[Reject]]:
        """Skipped items grouped by kind, kinds in first-seen order."""
        groups: dict[str, list[Reject]] = {}
        for item in self.items:
            groups.setdefault(item.kind, []).append(item)
        return groups

    def summary(self) -> str:
        """One line: the total and the count of each kind of skip."""
        if not self.items:
            return "no items skipped"
        detail = ", ".join(f"{len(items):,} {kind}" for kind, items in self.by_kind().items())
        return f"skipped {len(self.items):,} item(s) ({detail})"

    def summary_lines(self) -> list[str]:
        """The summary, then per kind of skip its count and first example (file:line: field: reason)."""
        lines = [self.summary()]
        for kind, items in self.by_kind().items():
            first = items[0]
            lines.append(f"  {len(items):,} {kind}, first {first.where()}: {first.field}: {first.reason}")
        return lines

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write every skipped item as file,line,field,reason,kind (atomically)."""
        from facedata.paths import atomic_write, full_disk_error  # (facedata.paths raises FacedataError)

        with full_disk_error(path, "the manifest is written, its rejects report is not"), \
                atomic_write(path, "w") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "line", "field", "reason", "kind"])
            for item in self.items:
                line = "" if item.line is None else item.line
                writer.writerow([item.file, line, item.field, item.reason, item.kind])
