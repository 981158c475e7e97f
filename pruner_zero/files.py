"""Files we read and write, safely: unique temporary names + atomic rename, bounded JSON reads,
output paths checked before long work, and a lock per run directory.

Every writer of the project goes through here, so a killed process leaves either the old or the
new file (never half of one), and two writers never share a temporary name.
"""
from __future__ import annotations

import errno
import glob
import json
import math
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import IO, Any, Callable

from .errors import ConfigError, PrunerZeroError

MAX_JSON_DEPTH = 100  # nesting of any JSON file we read (a metric tree is far shallower)


def user_path(text: str | Path) -> Path:
    """A path as the user typed it, `~` expanded where it can be (`~nobody/x` stays as typed
    instead of raising deep inside a check)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def looks_like_path(text: str, suffixes: tuple[str, ...] = (), hub_ids: bool = False) -> bool:
    """Whether text that names no existing file was meant as one, so that "not found" is the
    right error rather than "unknown name": a path separator, or one of `suffixes`. With
    `hub_ids`, `org/name` is a hub id; only a leading `.`, `/` or `~`, a trailing `/` or a
    second `/` make a path."""
    if suffixes and text.endswith(suffixes):
        return True
    if hub_ids:
        return text.startswith((".", "/", "~")) or text.count("/") > 1 or text.endswith("/")
    return "/" in text or "\\" in text or os.sep in text


# ------------------------------------------------------------------------ writing

def temp_path(path: Path, kind: str = "tmp") -> Path:
    """A name beside `path` that no other writer (process or thread) uses; hidden, so a
    half-written one is never mistaken for the real file."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write the whole file under a unique temporary name, fsync, then rename over `path`."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write_with(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """`obj` with every non-finite float as None: JSON has no Infinity or NaN, and the readers
    of other tools (jq, JavaScript, strict parsers) refuse them. What a null number means (a
    failed candidate, a diverged model) is in the status or reason beside it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of `obj` (non-finite numbers as null): every JSON file and line we write."""
    return json.dumps(strict_json(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, dumps_json(obj, indent) + "\n")


def atomic_write_with(path: str | Path, write: Callable[[str], None]) -> None:
    """Every writer's one path: `write(tmp)` (a file name, as safetensors wants), fsync, then
    rename into place, so a crash or power loss never leaves a renamed but empty file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path, "tmp")
    tmp = temp_path(path)
    try:
        write(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_dir(write: Callable[[Path], None], dest: str | Path) -> Path:
    """Fill a temporary directory beside `dest`, then rename it to `dest`: a process killed
    half-way leaves only a hidden `.NAME.PID.*.partial` directory, never a `dest` that looks
    complete. Partial directories of dead processes are removed first."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(dest)
    tmp = temp_path(dest, "partial")
    tmp.mkdir()
    try:
        write(tmp)
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()  # an empty directory the user made for us
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def remove_stale_partials(dest: Path, kind: str = "partial") -> list[Path]:
    """Remove the `.NAME.PID.*.KIND` temporaries beside `dest` of processes that died (SIGKILL
    leaves them; nothing else does)."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.(\d+)\.[0-9a-f]{{8}}\.{re.escape(kind)}")
    for p in dest.parent.glob(f".{glob.escape(dest.name)}.*.{kind}"):
        match = pattern.fullmatch(p.name)  # `.out.99999.<pid>...` belongs to `out.99999`, not `out`
        if match and not _alive(int(match.group(1))):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ output checks

def _probe(directory: Path) -> None:
    probe = temp_path(directory / "write-probe")
    with open(probe, "wb"):
        pass
    probe.unlink()


def check_writable_dir(path: str | Path, option: str) -> Path:
    """Create `path` (a directory we will write into) and prove it writable, before any work."""
    path = user_path(path)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{option} {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as exc:
        raise ConfigError(f"{option} {path} cannot be written: {_why(exc)}") from exc
    return path


def check_writable_file(path: str | Path, option: str) -> Path:
    """A file we will write at the end: its directory created and writable now, not after the work."""
    path = user_path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a directory; give a file name")
    check_writable_dir(path.parent if str(path.parent) else Path("."), option + " directory")
    return path


def _why(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EROFS,):
        reason = "read-only file system"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{reason}{where}"


# ------------------------------------------------------------------------ reading

def json_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings, without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_text_file(path: str | Path, what: str, error: type[PrunerZeroError] = ConfigError) -> str:
    """A UTF-8 text file we were given, or one `error` naming it and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {_why(exc)}") from None


def read_json(path: str | Path, what: str, error: type[PrunerZeroError] = ConfigError,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file's value, or one `error` naming the file and what is wrong with it."""
    text = read_text_file(path, f"the {what}", error)
    return parse_json(text, f"the {what} {path}", error, max_depth)


def parse_json(text: str, what: str, error: type[PrunerZeroError] = ConfigError,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{what} is nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer of 5000 digits
        raise error(f"{what} is not valid JSON: {str(exc)[:200]}") from None


def read_yaml(path: str | Path, what: str, error: type[PrunerZeroError] = ConfigError) -> Any:
    """A YAML file's value (safe_load), or one `error` naming the file and the problem."""
    import yaml

    text = read_text_file(path, what, error)
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise error(f"{what} {path} is not valid YAML: {first}") from None


# --------------------------------------------------------------------------- lock

class RunLock:
    """An exclusive lock on a directory, held while a process works in it. The kernel drops it
    when the holder dies (flock), so the lock of a killed run is taken over without a question;
    the file keeps the holder's pid and host for the message another process gets."""

    NAME = ".lock"

    def __init__(self, directory: str | Path, what: str = "run", name: str = NAME,
                 subject: str | Path | None = None, remove: bool = False) -> None:
        """``name``: the lock file's name in ``directory``; ``subject``: what the message says
        is in use (the directory); ``remove``: the file goes when the lock is released (a claim
        on a path that does not exist yet, made in its parent)."""
        self.path = Path(directory) / name
        self.what = what
        self.subject = Path(directory) if subject is None else subject
        self.remove = remove
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise ConfigError(f"{self.subject} is in use by another pruner-zero {self.what} "
                                  f"({holder}); wait for it to finish or use another "
                                  "directory") from exc
            if not self.remove or self._still_there(fh):
                break
            fh.close()  # its holder removed the file as we opened it: lock the new one
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        return self

    def _still_there(self, fh: IO[str]) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fh is not None:
            if self.remove:  # removed while held: a waiter that opened it sees it is gone
                self.path.unlink(missing_ok=True)
            self._fh.close()  # closing drops the flock
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
