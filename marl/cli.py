"""The `marl` command line: `marl envs` lists what can be trained (more commands join as they land)."""

from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """A user mistake reported as one line on stderr with exit status 2."""


def _envs(args: argparse.Namespace) -> int:
    from marl.envs.smac import SMACBatch, map_names

    if args.env not in (None, "smac"):
        raise CLIError(f"unknown environment {args.env!r}; known environments: smac")
    print("Environments")
    print("  smac    embedded SMAC-compatible simulator (no StarCraft II needed): marl train smac MAP")
    print()
    print("SMAC maps (smac)")
    header = f"  {'map':<16}{'agents':>7}{'enemies':>8}{'limit':>7}{'obs':>6}{'state':>7}{'actions':>8}  units"
    print(header)
    for name in map_names():
        b = SMACBatch(name, 1)
        m = b.map
        allies = _count(m.unit_names("ally"))
        enemies = _count(m.unit_names("enemy"))
        print(f"  {name:<16}{m.n_agents:>7}{m.n_enemies:>8}{m.limit:>7}{b.obs_dim:>6}{b.state_dim:>7}"
              f"{b.n_actions:>8}  {allies} vs {enemies}")
    return 0


def _count(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return " ".join(f"{c} {n}" for n, c in counts.items())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `marl` command."""
    p = argparse.ArgumentParser(prog="marl", description="Multi-agent RL with learned communication.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    e = sub.add_parser("envs", help="list environments and every SMAC map with its shapes")
    e.add_argument("env", nargs="?", help="only this environment (e.g. smac)")
    e.set_defaults(func=_envs)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `marl` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except CLIError as err:
        print(f"marl: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad names and values from the libraries carry one-line messages
        print(f"marl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
