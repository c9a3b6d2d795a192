"""common.run_lock: one run per output_dir; a killed run's lock is taken over; the lock goes at exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.bundle import lock_output_dir, release_output_dir
from common.run_lock import LOCK_NAME, OutputDirBusy

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

HOLD = (
    "import sys, time\n"
    "import common.bundle\n"
    "common.bundle.start_run()\n"  # as a bundle config's initialize does: a refusal is then one line
    "common.bundle.lock_output_dir(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def _holder(folder: Path, seconds: float = 120) -> subprocess.Popen:
    """A process that takes the lock on ``folder`` and sleeps; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _lock_in_subprocess(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HOLD, str(folder), "0"], capture_output=True, text=True, env=ENV, timeout=60
    )


def test_second_process_is_refused_with_one_line_naming_the_holder(tmp_path):
    holder = _holder(tmp_path)
    try:
        res = _lock_in_subprocess(tmp_path)
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        line = lines[0]
        assert line.startswith("synthaug: error: output_dir ") and "is in use by another run" in line
        assert f"pid {holder.pid} on host {socket.gethostname()}" in line
        assert "started 20" in line and "command: python" in line and "time.sleep" in line
        assert str(tmp_path / LOCK_NAME) in line
        with pytest.raises(OutputDirBusy, match=f"pid {holder.pid}"):  # in-process too
            lock_output_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path):
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)  # no atexit: the lock file stays, naming a pid that is gone
    holder.wait()
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["pid"] == holder.pid
    res = _lock_in_subprocess(tmp_path)
    assert res.returncode == 0, res.stderr
    assert "synthaug: warning: taking over the lock" in res.stderr and f"pid {holder.pid}" in res.stderr
    assert not (tmp_path / LOCK_NAME).exists(), "the new holder released it at its exit"


def test_stale_lock_file_with_dead_pid_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00", "command": "old run"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    try:
        assert lock_output_dir(tmp_path) == str(tmp_path)
        assert f"pid {dead.pid}" in capsys.readouterr().err
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock_output_dir(tmp_path) == str(tmp_path), "again in the same process: a no-op"
    finally:
        release_output_dir(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_pid_or_other_host_in_lock_file_is_not_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live pid without the flock (a file system without flock): still refused
        live = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "s", "command": "c"}
        (tmp_path / LOCK_NAME).write_text(json.dumps(live))
        with pytest.raises(OutputDirBusy, match=f"pid {sleeper.pid}"):
            lock_output_dir(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    other = {"pid": 1, "host": "some-other-node", "started": "s", "command": "c"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(OutputDirBusy, match="another host .*some-other-node.*delete"):
        lock_output_dir(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == other, "left as it was"


@pytest.mark.parametrize("ending", ["exit", "exception"])
def test_lock_is_released_at_exit(tmp_path, ending):
    code = HOLD + ("raise SystemExit(0)\n" if ending == "exit" else "raise RuntimeError('boom')\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path), "0"], capture_output=True, text=True, env=ENV)
    assert res.returncode == (0 if ending == "exit" else 1)
    assert not (tmp_path / LOCK_NAME).exists()
    assert _lock_in_subprocess(tmp_path).returncode == 0, "free for the next run"


def test_lock_creates_the_folder_and_is_free_after_release(tmp_path):
    folder = tmp_path / "new" / "run"
    lock_output_dir(folder)
    try:
        assert (folder / LOCK_NAME).exists()
        res = _lock_in_subprocess(folder)
        assert res.returncode != 0 and f"pid {os.getpid()}" in res.stderr
    finally:
        release_output_dir(folder)
    start = time.monotonic()
    assert _lock_in_subprocess(folder).returncode == 0
    assert time.monotonic() - start < 60
