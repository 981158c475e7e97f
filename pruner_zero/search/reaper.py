"""No Ray process of ours outlives the search, even a killed one (``search --workers``).

A search that starts its own local Ray cluster starts this watcher first, in its own session
(a Ctrl-C to the terminal does not reach it, a SIGKILL of the search does not kill it). The
search hands it its Ray processes as they start: the processes below it that were not there
when the watcher started and whose command line names Ray (pid and start time, so a reused pid
is never hit; a program that calls ``search`` keeps its own children). When the search's end of
the pipe closes, whether the search shut Ray down or died, the watcher kills those still
running. Without it, Ray's dashboard and runtime-env agents
of a killed search linger, reparented to init, for about a minute.

Light (no torch, no ray): run as ``python -m pruner_zero.search.reaper``. Linux only (/proc);
elsewhere ``Reaper.start`` returns None and Ray's own timeouts are all there is.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a running process, or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def _names_ray(pid: int) -> bool:
    try:
        return b"ray" in (PROC / str(pid) / "cmdline").read_bytes().lower()
    except OSError:
        return False


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root``: pid -> start time."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is not None and pid not in out:
            out[pid] = stat[1]
            todo.extend(children.get(pid, []))
    return out


class Reaper:
    """The search's side: the watcher process and the pipe to it."""

    def __init__(self, process: subprocess.Popen, pipe: IO[str],
                 before: dict[int, int]) -> None:
        self.process, self.pipe, self.before = process, pipe, before

    @classmethod
    def start(cls) -> "Reaper | None":
        if not PROC.is_dir():
            return None
        before = descendants(os.getpid())  # the caller's own children are never handed over
        process = subprocess.Popen([sys.executable, "-m", "pruner_zero.search.reaper"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        assert process.stdin is not None
        return cls(process, process.stdin, before)

    def watch_children(self) -> None:
        """Hand the watcher the Ray processes now below this one (OSError: it is gone)."""
        lines = [f"{pid} {start}\n" for pid, start in descendants(os.getpid()).items()
                 if pid != self.process.pid and self.before.get(pid) != start
                 and _names_ray(pid)]
        self.pipe.writelines(lines)
        self.pipe.flush()

    def close(self) -> None:
        """After Ray's own shutdown: the watcher kills what is left of ours, and exits."""
        try:
            self.pipe.close()
        except OSError:
            pass  # the watcher is gone already: nothing is left to tell it
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # the pipe is held open elsewhere: stop waiting
            self.process.kill()
            self.process.wait()


def _reap(pipe: IO[str]) -> int:
    """The watcher: read (pid, start time) lines until the search's end closes, then kill."""
    watched: dict[int, int] = {}
    for line in pipe:
        pid, start = line.split()
        watched[int(pid)] = int(start)
    for pid, start in watched.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # it ended between the look and the kill
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end stops the watcher
    sys.exit(_reap(sys.stdin))
