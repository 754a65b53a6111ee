"""One training run per workdir: a second run is refused naming the first, the lock of a killed run
is taken over (the operating system released it), and the lock goes away on every way out."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from icnet_jax import errors
from icnet_jax.train import workdir_lock
from tests import scripts

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
        cwd=scripts.REPO,
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
    assert (workdir / workdir_lock.HOLDER_NAME).exists()  # the holder's record is left alone

    process.communicate(timeout=60)  # the holder ends normally: its lock goes
    assert process.returncode == 0
    assert not workdir.exists()  # made for the lock and left empty: removed with it


def test_train_py_on_a_workdir_in_use_is_one_error_line_and_writes_nothing(holder):
    workdir, process = holder
    done = scripts.run("train.py", f"--workdir={workdir}")
    assert f"process {process.pid}" in scripts.one_error_line(done), done.stderr
    names = sorted(p.name for p in workdir.iterdir())
    assert names == [workdir_lock.LOCK_NAME, workdir_lock.HOLDER_NAME]


def test_the_lock_of_a_killed_process_is_taken_over_with_a_line(holder, logged):
    workdir, process = holder
    (workdir / "checkpoints").mkdir()
    process.send_signal(signal.SIGKILL)  # no chance to clean up: the OS releases the lock
    process.wait(timeout=60)
    with workdir_lock.hold(workdir):
        record = json.loads((workdir / workdir_lock.HOLDER_NAME).read_text())
        assert record["pid"] == os.getpid()
    report = logged()
    assert f"process {process.pid}" in report and "no longer running" in report
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints"]


def test_a_record_without_a_lock_held_is_taken_over(tmp_path, logged):
    # Whatever it says (another host, a pid now running something else): nobody holds the lock.
    workdir = tmp_path / "run"
    workdir.mkdir()
    left = {"pid": os.getppid(), "host": "another-host", "since": "2026-01-01T00:00:00+00:00"}
    (workdir / workdir_lock.HOLDER_NAME).write_text(json.dumps(left))
    with workdir_lock.hold(workdir):
        pass
    assert "on another-host" in logged()


def test_the_lock_goes_on_an_error_and_a_folder_it_made_is_removed(tmp_path):
    workdir = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), workdir_lock.hold(workdir):
        assert (workdir / workdir_lock.HOLDER_NAME).exists()
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
