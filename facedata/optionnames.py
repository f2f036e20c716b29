"""Option names retired because one name meant several things, and the one name each meaning has now.

`--min-face` meant "faces under this are ignore regions" in `build pnet`, "the smallest face the image
pyramid searches" in `detect` and `build rnet/onet`, and a survival threshold in `stats` and `report`;
`--gt-min-face` and `--landmark-min-face` were the first meaning under other names. Each meaning has one
name now, the same on every command (and builds measure a face by its shorter side, facedata.faces).

The old names still work where they worked (hidden from --help): each use prints a one-line notice naming
the new option, and the command runs as if the new name had been given. A refusal would break every script
for a rename; a silent alias would leave the old, ambiguous names in use forever.
"""

from __future__ import annotations

import click

SHORTER_SIDE = "faces are now measured by their shorter side, as in filter and stats"
MEANINGS = {  # the one meaning of each new name, for the notices
    "--ignore-under": f"faces under PX are not sampled, ignore regions; {SHORTER_SIDE}",
    "--landmark-ignore-under": f"landmark faces under PX are not sampled; {SHORTER_SIDE}",
    "--pyramid-min-face": "the smallest face the detector's image pyramid searches",
    "--survival-px": "the survival table's threshold",
}
_MINING = {"--min-face": "--pyramid-min-face", "--gt-min-face": "--ignore-under",
           "--landmark-min-face": "--landmark-ignore-under"}
RENAMED: dict[str, dict[str, str]] = {  # command -> {old option: new option}
    "build pnet": {"--min-face": "--ignore-under", "--landmark-min-face": "--landmark-ignore-under"},
    "build rnet": _MINING,
    "build onet": _MINING,
    "detect": {"--min-face": "--pyramid-min-face"},
    "stats": {"--min-face": "--survival-px"},
    "report": {"--min-face": "--survival-px"},
}


def command_name(ctx: click.Context) -> str:
    """'build pnet' for `facedata build pnet` (the names under the root command)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def renamed_args(command: str, args: list[str]) -> list[str]:
    """`args` with this command's old option names replaced by the new ones, a notice on stderr for each."""
    renamed = RENAMED.get(command, {})
    out = list(args)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        old, sep, value = arg.partition("=")
        new = renamed.get(old)
        if new is not None:
            out[i] = new + sep + value
            click.echo(f"notice: {old} is deprecated in '{command}': use {new} ({MEANINGS[new]})", err=True)
    return out


class RenamingCommand(click.Command):
    """A command that still accepts its retired option names (RENAMED), with a notice naming the new ones."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, renamed_args(command_name(ctx), args))
