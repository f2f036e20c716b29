"""The `facedata` command: parses options and calls the library; no logic lives here."""

from __future__ import annotations

import sys

import click

from facedata import __version__
from facedata.errors import FacedataError


class _Group(click.Group):
    """Prints library errors as one clear line (exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except FacedataError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__)
def main() -> None:
    """Face detection and landmark corpora to sharded, checksummed training data."""
