"""The build commands' option values: numbers in range, sizes, the class mix, image roots.

Every bad value is a one-line error naming the CLI flag, raised while the options are parsed, before
anything is read or written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from facedata.errors import FacedataError
from facedata.paths import local_path

MAX_SHARD_BYTES = 1 << 40


class Number(click.ParamType):
    """A finite number (or integer) from `low` to `high`; anything else (nan, inf, out of range) is an error
    naming the flag: `Invalid value for '--ignore-under': must be a finite number >= 0, got nan`."""

    name = "number"

    def __init__(self, low: float, high: float = math.inf, *, integer: bool = False) -> None:
        self.low, self.high, self.integer = low, high, integer
        self.name = "integer" if integer else "number"

    def rule(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low, high = (int(self.low), int(self.high)) if self.integer and self.high < math.inf else (self.low, self.high)
        if high == math.inf:
            return kind if low == -math.inf else f"{kind} >= {low:g}"
        return f"{kind} from {low} to {high}" if self.integer else f"{kind} from {low:g} to {high:g}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        return self.check(flag_name(param), value)

    def check(self, flag: str, value: Any) -> int | float:
        """`value` as a number of this kind, or a one-line error naming `flag`."""
        try:
            number = float(value)
            ok = math.isfinite(number) and self.low <= number <= self.high
            ok = ok and (not self.integer or number == int(number) and "." not in str(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise FacedataError(f"Invalid value for '{flag}': must be {self.rule()}, got {value}")
        return int(number) if self.integer else number


def check_values(*checks: tuple[str, Any, Number]) -> None:
    """Check option values parsed without a `Number` type: (flag, value, rule) each."""
    for flag, value, rule in checks:
        rule.check(flag, value)


def check_iou_order(neg: float, part: float, pos: float) -> None:
    """The three IoU thresholds must split [0, 1] in order."""
    if not neg <= part <= pos:
        raise FacedataError(f"Invalid values for '--neg-iou', '--part-iou', '--pos-iou': need neg <= part <= pos, "
                            f"got {neg:g}, {part:g}, {pos:g}")


def flag_name(param: click.Parameter | None) -> str:
    """The long flag of an option (`--ignore-under`), as the user typed it."""
    if param is None:
        return "value"
    opts = getattr(param, "opts", None) or [param.name or "value"]
    return max(opts, key=len)

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """'256MB', '64MiB', '1G', '1000000' -> bytes (from 1 byte to 1 TiB)."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("kmgib")
    unit = raw[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        value = math.nan
    if not 1 <= value <= MAX_SHARD_BYTES:  # also nan
        raise FacedataError(f"Invalid value for '--shard-size': must be a size from 1 byte to 1TiB such as 256MB, "
                            f"64MiB or a byte count, got {text!r}")
    return int(value)


def parse_ratio(text: str) -> dict[int, float] | None:
    """'neg:pos:part:landmark', e.g. '3:1:1:2' -> {0: 3, 1: 1, -1: 1, -2: 2}; 'all' -> None (no mixing)."""
    if text.strip().lower() == "all":
        return None
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(0 <= v < math.inf for v in values):
        raise FacedataError(f"Invalid value for '--ratio': expected neg:pos:part:landmark, four finite numbers "
                            f">= 0 such as 3:1:1:2, or 'all'; got {text!r}")
    if values[1] == 0:
        raise FacedataError(f"Invalid value for '--ratio': the positive share must be > 0 (the mix is anchored "
                            f"on the positives), got {text!r}")
    from facedata.samples import LABEL_ORDER  # not at import: the CLI imports this module for every command

    return dict(zip(LABEL_ORDER, values, strict=True))


def parse_roots(values: Iterable[str], names: Iterable[str]) -> dict[str, str] | None:
    """--images NAME=DIR (repeatable); a bare DIR is allowed when the manifests use one root name
    (`names`: the root names they use, e.g. from Manifest.root_names)."""
    values = list(values)
    if not values:
        return None
    names = sorted(set(names))
    roots: dict[str, str] = {}
    for value in values:
        name, directory = root_folder(value)
        if not name:
            if len(names) != 1:
                raise FacedataError(
                    f"--images {value!r}: the manifests use image roots {names}; say which as NAME=DIR"
                )
            name = names[0]
        elif name not in names:  # a typo would silently leave the manifest's own root in use
            raise FacedataError(f"--images {value!r}: no image root named {name!r}; the manifests use {names}")
        roots[name] = str(directory.resolve())
    return roots


def root_folder(value: str) -> tuple[str, Path]:
    """(NAME or "", DIR) of one `--images [NAME=]DIR` value; DIR must be an existing folder (a typo would
    otherwise show up much later, as every image missing)."""
    name, sep, directory = value.partition("=")
    if not sep:
        name, directory = "", value
    folder = local_path(directory, "--images")
    if not folder.is_dir():
        state = "not a folder" if folder.exists() else "no such folder"
        raise FacedataError(f"--images {value!r}: {state}: {folder}")
    return name, folder
