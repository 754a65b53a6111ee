"""One training run per workdir: a second run is refused naming the first, a lock left by a killed
run is taken over, and the lock goes away on every way out."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from icnet_jax import errors
from icnet_jax.train import workdir_lock
from tests import scripts

REPO = pathlib.Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from icnet_jax.train import workdir_lock
with workdir_lock.hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


@pytest.fixture
def holder(tmp_path):
    """A real second process holding the lock of `tmp_path / 'run'`: `(workdir, process)`."""
    workdir = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held", process.stderr.read()
    yield workdir, process
    if process.poll() is None:
        process.communicate(timeout=60)


def test_a_workdir_in_use_is_refused_naming_the_other_process(holder):
    workdir, process = holder
    with pytest.raises(errors.UserError) as refused, workdir_lock.hold(workdir):
        pytest.fail("entered a workdir in use")
    message = str(refused.value)
    assert f"process {process.pid} on {socket.gethostname()}" in message
    assert "since" in message and "in use" in message
    assert (workdir / workdir_lock.LOCK_NAME).exists()  # the holder's lock is left alone

    process.communicate(timeout=60)  # the holder ends normally: its lock goes
    assert process.returncode == 0
    assert not workdir.exists()  # made for the lock and left empty: removed with it


def test_train_py_on_a_workdir_in_use_is_one_error_line_and_writes_nothing(holder):
    workdir, process = holder
    done = scripts.run("train.py", f"--workdir={workdir}")
    assert f"process {process.pid}" in scripts.one_error_line(done), done.stderr
    assert [p.name for p in workdir.iterdir()] == [workdir_lock.LOCK_NAME]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_of_a_killed_process_is_taken_over_with_a_line(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "checkpoints").mkdir()
    pid = _dead_pid()
    stale = {"pid": pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00"}
    (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(stale))
    with workdir_lock.hold(workdir):
        record = json.loads((workdir / workdir_lock.LOCK_NAME).read_text())
        assert record["pid"] == os.getpid()
    report = capsys.readouterr().err
    assert f"process {pid}" in report and "no longer running" in report
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints"]


def test_a_lock_of_another_host_is_not_taken(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    other = {"pid": _dead_pid(), "host": "another-host", "since": "2026-01-01T00:00:00+00:00"}
    (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(errors.UserError, match="on another-host"), workdir_lock.hold(workdir):
        pytest.fail("took the lock of a run on another host")


def test_the_lock_goes_on_an_error_and_a_folder_it_made_is_removed(tmp_path):
    workdir = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), workdir_lock.hold(workdir):
        assert (workdir / workdir_lock.LOCK_NAME).exists()
        raise RuntimeError("the run failed")
    assert not (tmp_path / "new").exists()

    with pytest.raises(KeyboardInterrupt), workdir_lock.hold(workdir):
        (workdir / "metrics.jsonl").write_text("")
        raise KeyboardInterrupt
    assert [p.name for p in workdir.iterdir()] == ["metrics.jsonl"]  # the run's files stay


def test_a_workdir_that_cannot_be_created_is_one_error(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("")
    with pytest.raises(errors.UserError, match="is a file"), workdir_lock.hold(file / "run"):
        pytest.fail("held a lock under a file")


def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path, capsys):
    # The pid is alive (this test's parent) but started after the lock was written: a pid reused
    # after a reboot or many processes later.
    workdir = tmp_path / "run"
    workdir.mkdir()
    reused = {"pid": os.getppid(), "host": socket.gethostname(), "since": "2026-01-01T00:00:00"}
    reused["process"] = "a-boot-before/12345"
    (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(reused))
    with workdir_lock.hold(workdir):
        pass
    assert "no longer running" in capsys.readouterr().err


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_lock_of_a_killed_but_unreaped_process_is_taken_over(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        process.kill()
        stat = pathlib.Path(f"/proc/{process.pid}/stat")
        while stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z":  # a zombie until waited for
            time.sleep(0.01)
        zombie = {"pid": process.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00"}
        (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(zombie))
        with workdir_lock.hold(workdir):
            pass
    finally:
        process.wait()
    assert f"process {process.pid}" in capsys.readouterr().err
