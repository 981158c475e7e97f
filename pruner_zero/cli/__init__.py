"""`pruner-zero` command line: thin commands that parse flags, call the API and print.

Errors are one line. Starting (and `--help`) imports no torch: each command imports the
library when it runs."""
from __future__ import annotations

import argparse
import importlib.metadata
import signal
import sys
import threading

from ..errors import PrunerZeroError
from ..files import user_path
from ..search.layout import CONFIG
from . import compare, prune, report, search, tools
from .common import Parser, one_line

__all__ = ["build_parser", "main"]


def _version() -> str:
    try:
        return importlib.metadata.version("pruner-zero")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pruner-zero", description="Discover and apply pruning metrics for LLMs.")
    parser.add_argument("--version", action="version", version=f"pruner-zero {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (prune, search, tools, compare, report):
        command.add_parsers(sub)
    return parser


def _terminate_like_interrupt():
    """SIGTERM (timeout, Slurm, docker stop) gets the cleanup of Ctrl-C: temporary files and
    directories are removed and a search says how to resume, instead of a silent death."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, interrupt)  # the caller's handler, to restore
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._argv = argv[argv.index(args.command) + 1:]  # the command's own flags, as typed
    if sys.stdout is None:  # started with standard output closed: the result line would be lost
        _say("error: standard output is closed; the result line would be lost (redirect it to a "
             "file or /dev/null instead)")
        return 2
    previous = _terminate_like_interrupt()
    try:
        return _dispatch(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _say(line: str) -> None:
    """One line on standard error, if there is one."""
    if sys.stderr is not None:
        print(line, file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        code = args.func(args)
        sys.stdout.flush()  # a result line that cannot be written is an error, not exit 0
        return code
    except PrunerZeroError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (disk full, permissions, a name too long): no bug
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {one_line(exc.strerror or str(exc))}{one_line(where)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if getattr(args, "command", None) == "search":
            out = getattr(args, "resume", None) or getattr(args, "out", None)
            if out and (user_path(out) / CONFIG).is_file():  # else there is nothing to resume
                hint = f"; continue with: pruner-zero search --resume {out}"
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
