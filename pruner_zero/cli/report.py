"""`pruner-zero report`: plots and a summary of a search run directory."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plot and summarise a search run directory",
                       description="Write fitness.png, front.png and report.md for a finished or "
                                   "running search run directory.")
    p.add_argument("run", help="the search run directory (--out of pruner-zero search)")
    p.add_argument("--out", default=None, help="write the report here (default: the run directory)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """Print where report.md is, for scripts to pick up."""
    from ..report import write_report

    try:
        path = write_report(Path(a.run), Path(a.out) if a.out else None)
    except OSError as exc:  # an unwritable --out or run dir: one line, nothing else lost
        raise ConfigError(f"cannot write the report: {exc.strerror or exc} "
                          f"({exc.filename or a.out or a.run})") from exc
    print(path)
    return 0
