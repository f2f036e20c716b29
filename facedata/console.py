"""What every command prints the same way: numbers for people (`2,641`), labels in class order
(neg:pos:part:landmark) and progress that is a bar on a terminal but plain periodic lines in a log."""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from tqdm import tqdm

from facedata.samples import LABEL_NAMES, LABEL_ORDER

PROGRESS_EVERY_SECONDS = 60.0  # a log gets a progress line at least this often (and at every 10%)
PROGRESS_GAP_SECONDS = 5.0  # ... but never sooner than this after the last one: a pass of a second gets one line
LISTED = 10  # items of a list of records shown by key_value_lines


def number(value: Any) -> str:
    """A count with thousands separators (2,641), a measure rounded to what a person reads (0.257, 1,234.6)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def label_name(label: int | str) -> str:
    """`negative` for 0, "0" or "negative": index.json keys labels by code, summaries by name."""
    try:
        return LABEL_NAMES.get(int(label), str(label))
    except ValueError:
        return str(label)


def in_class_order(counts: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    """(label name, value) in neg:pos:part:landmark order, whatever the keys (codes or names); absent
    classes are 0, keys that are no label follow in their own order."""
    by_name = {label_name(key): value for key, value in counts.items()}
    ordered = [(LABEL_NAMES[label], by_name.pop(LABEL_NAMES[label], 0)) for label in LABEL_ORDER]
    return ordered + list(by_name.items())


def labels_text(counts: Mapping[Any, Any]) -> str:
    """`negative 240, positive 99, part 318, landmark 9,445`."""
    return ", ".join(f"{name} {number(value)}" for name, value in in_class_order(counts))


def is_label_mapping(mapping: Mapping[Any, Any]) -> bool:
    """Keyed by label names or codes only (index.json's label counts and mixing tables)."""
    names = set(LABEL_NAMES.values())
    return bool(mapping) and all(label_name(key) in names for key in mapping)


def value_text(value: Any) -> str:
    """One value for people: numbers as `number`, label tables in class order, `none` for nothing."""
    if isinstance(value, Mapping):
        pairs = in_class_order(value) if is_label_mapping(value) else value.items()
        return ", ".join(f"{key} {value_text(item)}" for key, item in pairs) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value) or "none"
    return "none" if value is None else number(value)


def key_value_lines(items: Iterable[tuple[str, Any]], indent: int = 0) -> list[str]:
    """Aligned `key  value` lines; a mapping holding mappings or lists becomes an indented block, a list of
    records one line per record (the first LISTED)."""
    items = list(items)
    width = max((len(key) for key, _ in items), default=0) + 2
    pad = " " * indent
    lines: list[str] = []
    for key, value in items:
        if isinstance(value, Mapping) and any(isinstance(v, Mapping | list) for v in value.values()):
            lines.append(pad + key)
            lines.extend(key_value_lines(value.items(), indent + 2))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{key:<{width}}{number(len(value))}")
            lines.extend(f"{pad}  {value_text(v)}" for v in value[:LISTED])
            if len(value) > LISTED:
                lines.append(f"{pad}  ... and {number(len(value) - LISTED)} more")
        else:
            lines.append(f"{pad}{key:<{width}}{value_text(value)}")
    return lines


def progress(total: int, desc: str, unit: str, *, enabled: bool = True, initial: int = 0,
             stream: TextIO | None = None) -> tqdm | PlainProgress:
    """A tqdm bar when `stream` (stderr) is a terminal; in a log or a pipe plain lines (no carriage returns)."""
    stream = sys.stderr if stream is None else stream
    if enabled and not stream.isatty():
        return PlainProgress(total, desc, unit, initial, stream)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, disable=not enabled)


class PlainProgress:
    """Progress for logs: one line at every 10% done (at most one per PROGRESS_GAP_SECONDS), at least every
    PROGRESS_EVERY_SECONDS, and at the end."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, stream: TextIO) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = self._shown = initial
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        since = now - self._last
        if (self._tenth(self.n) > self._tenth(self._shown) and since >= PROGRESS_GAP_SECONDS) or (
                since >= PROGRESS_EVERY_SECONDS):
            self._line(now)

    def close(self) -> None:
        if self.n != self._shown:
            self._line(time.monotonic())

    def _tenth(self, n: int) -> int:
        return 10 * n // self.total if self.total else 0

    def _line(self, now: float) -> None:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        self.stream.write(f"{self.desc}: {number(self.n)}/{number(self.total)} {self.unit}{share}, "
                          f"{now - self._start:.1f} s\n")
        self.stream.flush()
        self._shown, self._last = self.n, now
