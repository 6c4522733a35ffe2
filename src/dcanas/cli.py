"""The `dcanas` command line: parses arguments and calls the library; nothing else lives here."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable, Collection, Sequence

from .errors import DcanasError

Handler = Callable[[argparse.Namespace], int]


class OneLineErrors(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (with where to look) instead of the whole usage text."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    from . import __version__

    parser = OneLineErrors(prog="dcanas", description="Device Constraints-Aware NAS")
    parser.add_argument("--version", action="version", version=f"dcanas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        p.set_defaults(handler=handler, help_prog=p.prog)
        return p

    from .commands import register_all

    register_all(command)
    return parser


# no option name starts with a digit, so such a token is a value (argparse only knows plain negative numbers)
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def flag_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string (subcommands' too) that takes no value: --json, --quiet, ..."""
    flags: set[str] = set()
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if action.option_strings and action.nargs == 0:
            flags.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= flag_options(sub)
    return flags


def glue_negative_values(argv: Sequence[str], flags: Collection[str] = ()) -> list[str]:
    """`--max-params -3M` as `--max-params=-3M`, so the value's own check names the problem ('must be positive')
    instead of argparse's 'expected one argument'; never onto a flag in `flags`, nor after a bare `--`."""
    glued: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return glued + list(argv[i:])
        previous = glued[-1] if glued else ""
        if (_NEGATIVE_VALUE.match(token) and previous.startswith("--") and "=" not in previous
                and previous not in flags):
            glued[-1] = f"{previous}={token}"
        else:
            glued.append(token)
    return glued


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2; interrupts exit 130."""
    from .logs import log_to_stderr

    parser = build_parser()
    argv = glue_negative_values(sys.argv[1:] if argv is None else argv, flag_options(parser))
    args, extras = parser.parse_known_args(argv)
    if extras:  # point at the subcommand's help, where its options are, not the top level's
        parser.exit(2, f"dcanas: error: unrecognized arguments: {' '.join(extras)} "
                       f"(see {getattr(args, 'help_prog', parser.prog)} --help)\n")
    log_to_stderr()
    try:
        return args.handler(args)
    except DcanasError as exc:
        print(f"dcanas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"dcanas: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
