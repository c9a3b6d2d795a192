"""A lock on a run's ``output_dir``: a second run into the same folder stops at once, naming the run that holds it.

Two trainings writing the same checkpoints, logs and model file corrupt each other silently, so ``train.json`` calls
``common.bundle.lock_output_dir(@output_dir)`` in its ``initialize`` list. The lock is a file ``.synthaug.lock`` in
``output_dir`` holding the holder's pid, host, start time and command, kept under an exclusive ``flock`` for the life
of the process. At exit the file is removed; a run killed before that (SIGKILL, a pre-empted job) leaves the file but
not the ``flock``, and the next run on this host sees that its pid is gone, says so in one warning and takes over.
A lock held by a run on another host is never taken over: delete the file once that run is known to be gone.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from common.errors import DataError

__all__ = ["LOCK_NAME", "OutputDirBusy", "lock_output_dir", "release_output_dir"]

LOCK_NAME = ".synthaug.lock"

# resolved output_dir -> (fd holding the flock, lock file path, pid that took it)
_HELD: dict[str, tuple[int, Path, int]] = {}
_ATEXIT_REGISTERED = False


class OutputDirBusy(DataError):
    """``output_dir`` is in use by another run."""


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs on this host (a zombie does not; a pid reused by a later process does not either)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state in ("Z", "X"):
        return False
    return start_ticks is None or _proc_start_ticks(pid) in (None, start_ticks)


def _command() -> str:
    """This process's command line, readable on one line (``python -m monai.bundle run training --config_file ...``)."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    words = [a if a and not any(c.isspace() for c in a) else '"' + a.replace('"', '\\"') + '"' for a in argv]
    cmd = " ".join(words).replace("\n", " ").replace("\r", " ")
    return cmd if len(cmd) <= 400 else cmd[:397] + "..."


def _record() -> dict:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": _command(),
        "pid_start_ticks": _proc_start_ticks(pid),
    }


def _read(fd: int) -> dict | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        record = json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_holder(fd: int, wait: float = 1.0) -> dict | None:
    """The holder's record; it may be a moment between taking the flock and writing it."""
    deadline = time.monotonic() + wait
    while True:
        record = _read(fd)
        if record is not None or time.monotonic() >= deadline:
            return record
        time.sleep(0.05)


def _describe(record: dict | None) -> str:
    if not record:
        return "an unknown run (its lock file is empty)"
    return (
        f"pid {record.get('pid')} on host {record.get('host')}, started {record.get('started')}, "
        f"command: {record.get('command')}"
    )


def _is_ours(record: dict | None) -> bool:
    return bool(record) and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()


def lock_output_dir(output_dir: str | os.PathLike) -> str:
    """Take the lock on ``output_dir`` (created if missing) for the rest of this process; return ``output_dir``.

    Raises ``OutputDirBusy`` (a ``DataError``: a bundle run ends with its one line) naming the holder's pid, host,
    start time and command when another live run holds it. A lock left by a run that is gone (its pid no longer runs
    on this host) is taken over with a warning on stderr. Calling it again in the same process is a no-op. Under
    ``torchrun`` only rank 0 takes the lock (all ranks share one run). Released at exit, or by
    ``release_output_dir``.
    """
    global _ATEXIT_REGISTERED
    if os.environ.get("RANK", "0").strip() not in ("", "0"):
        return str(output_dir)
    folder = Path(output_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:
        return str(output_dir)
    path = folder / LOCK_NAME
    flock_ok = True
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputDirBusy(
                f"output_dir '{output_dir}' is in use by another run ({_describe(holder)}); wait for it to finish "
                f"or pass another --output_dir (lock file {path})"
            ) from None
        except (ImportError, OSError) as e:  # no flock here (Windows, some network file systems): pids alone
            if isinstance(e, OSError) and e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            flock_ok = False
        try:  # the file we locked must still be the one at `path` (a releasing holder unlinks it)
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)

    old = _read(fd)
    if old and not _is_ours(old):
        here = socket.gethostname()
        pid = old.get("pid")
        if old.get("host") != here:
            os.close(fd)
            raise OutputDirBusy(
                f"output_dir '{output_dir}' is locked by a run on another host ({_describe(old)}); if that run is "
                f"no longer running, delete {path}, or pass another --output_dir"
            )
        if isinstance(pid, int) and _pid_alive(pid, old.get("pid_start_ticks")):
            os.close(fd)
            raise OutputDirBusy(
                f"output_dir '{output_dir}' is in use by another run ({_describe(old)}); wait for it to finish "
                f"or pass another --output_dir (lock file {path})"
            )
        print(
            f"synthaug: warning: taking over the lock on output_dir '{output_dir}' left by a run that is gone "
            f"({_describe(old)}): it was killed or crashed; its outputs there may be incomplete",
            file=sys.stderr,
            flush=True,
        )
    elif old is None and not flock_ok and path.stat().st_size:  # unreadable record without flock: be safe
        os.close(fd)
        raise OutputDirBusy(
            f"output_dir '{output_dir}' has an unreadable lock file {path}; delete it if no run uses it"
        )

    data = json.dumps(_record()).encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)
    _HELD[key] = (fd, path, os.getpid())
    if not _ATEXIT_REGISTERED:
        atexit.register(_release_all)
        _ATEXIT_REGISTERED = True
    return str(output_dir)


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Release this process's lock on ``output_dir`` (removing the lock file); nothing if it holds none."""
    entry = _HELD.pop(str(Path(output_dir).expanduser().resolve()), None)
    if entry is not None:
        _release(*entry)


def _release(fd: int, path: Path, pid: int) -> None:
    if os.getpid() != pid:  # a forked child: the lock is its parent's
        return
    try:
        if _is_ours(_read(fd)) and os.path.samestat(os.fstat(fd), os.stat(path)):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


def _release_all() -> None:
    while _HELD:
        _release(*_HELD.popitem()[1])
