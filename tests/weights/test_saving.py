"""A full disk while saving a checkpoint: one line naming the device, the step and the last good
checkpoint; the unfinished save's folder does not stay, and one left by a crash goes at the next
start."""

import errno
import os
import pathlib

import numpy as np
import pytest

from icnet_jax import errors
from icnet_jax.weights import checkpoints
from tests import scripts


def _fill_disk_at(step_to_fail: int, where: str = "save"):
    """A stand-in for orbax's `save` (or `wait_until_finished`) that runs out of space at
    `step_to_fail` after starting its temporary folder, as a full disk does."""
    real_save = checkpoints.ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step != step_to_fail:
            return real_save(self, step, *args, **kwargs)
        tmp = pathlib.Path(self.directory) / f"{step}.orbax-checkpoint-tmp-1733000000"
        (tmp / "state").mkdir(parents=True)
        (tmp / "state" / "part").write_bytes(b"\0" * 100)
        if where == "save":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return None

    def wait(self):
        if any(pathlib.Path(self.directory).glob("*.orbax-checkpoint-tmp*")):
            # tensorstore's asynchronous writes say it in words, wrapped in orbax's errors
            raise ValueError(
                "Error writing local file: [OS error 28: No space left on device]"
            ) from OSError(errno.ENOSPC, "")
        return None

    return save, wait


def _state(scale: float) -> dict:
    return {"w": np.arange(4.0) * scale}


def test_no_space_while_saving_is_one_error_naming_step_and_last_good(tmp_path, monkeypatch):
    manager = checkpoints.create_manager(tmp_path, asynchronous=False)
    checkpoints.save(manager, 1, _state(1), {}, {})
    save, _ = _fill_disk_at(2)
    monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", save)
    with pytest.raises(checkpoints.DiskFullError) as full:
        checkpoints.save(manager, 2, _state(2), {}, {})
    message = str(full.value)
    assert "\n" not in message
    assert "no space left on" in message and "while saving step 2" in message
    assert "the last good checkpoint is step 1" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    assert isinstance(full.value, errors.UserError)  # one `error:` line, exit 2


def test_no_space_in_an_asynchronous_save_names_that_save(tmp_path, monkeypatch):
    manager = checkpoints.create_manager(tmp_path, asynchronous=False)
    checkpoints.save(manager, 2, _state(1), {}, {})
    save, wait = _fill_disk_at(4, where="wait")
    monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "wait_until_finished", wait)
    checkpoints.save(manager, 4, _state(2), {}, {})  # "asynchronous": fails later
    with pytest.raises(checkpoints.DiskFullError, match="saving step 4; the last good .* step 2"):
        checkpoints.finish(manager)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]


def test_other_save_errors_pass_unchanged(tmp_path, monkeypatch):
    manager = checkpoints.create_manager(tmp_path, asynchronous=False)

    def broken(self, step, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", broken)
    with pytest.raises(OSError, match="Input/output") as raised:
        checkpoints.save(manager, 1, _state(1), {}, {})
    assert not isinstance(raised.value, checkpoints.DiskFullError)


def test_the_leftover_of_an_interrupted_save_is_removed_at_the_next_start(tmp_path, logged):
    checkpoints.write(tmp_path, 3, _state(3), {})
    leftover = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1733000000"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "part").write_bytes(b"\0" * 100)
    manager = checkpoints.create_manager(tmp_path)
    report = logged()
    assert str(leftover) in report and "interrupted" in report and report.count("\n") == 1
    assert not leftover.exists()
    assert manager.all_steps() == [3]
    manager.close()


WRAPPER = """
import errno, os, pathlib, runpy, sys
import orbax.checkpoint as ocp

def save(self, step, *args, **kwargs):
    (pathlib.Path(self.directory) / f"{step}.orbax-checkpoint-tmp-1").mkdir(parents=True)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

ocp.CheckpointManager.save = save
sys.argv = ["prune", *sys.argv[1:]]
runpy.run_module("icnet_jax.tools.prune", run_name="__main__")
"""


def test_a_tool_on_a_full_disk_is_one_error_line(tmp_path, tiny_checkpoint):
    out = tmp_path / "pruned"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = [f"--checkpoint={tiny_checkpoint[0]}", f"--output={out}", "--keep=0.5"]
    line = scripts.one_error_line(scripts.run("-c", WRAPPER, *args, env=env))
    assert "no space left on" in line
    assert "while saving step 0" in line and "no checkpoint" in line
    assert list((out / "checkpoints").iterdir()) == []
