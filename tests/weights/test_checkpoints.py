"""weights/checkpoints.py: reading a workdir, its checkpoints/ folder or one step; unreadable
checkpoints set aside; a checkpoint of another model refused; the classes and config saved."""

import jax
import numpy as np
import pytest

from icnet_jax import errors
from icnet_jax.weights import checkpoints
from tests.checkpoint_fakes import NUM_CLASSES


@pytest.mark.parametrize("where", ["workdir", "checkpoints", "step"])
def test_a_workdir_its_folder_or_a_step_open_the_same_checkpoint(tiny_checkpoint, where):
    workdir, _, config = tiny_checkpoint
    path = {
        "workdir": workdir,
        "checkpoints": workdir / "checkpoints",
        "step": workdir / "checkpoints" / "7",
    }[where]
    manager, named = checkpoints.open_for_reading(path)
    try:
        assert manager.all_steps() == [7]
        assert named == (7 if where == "step" else None)
        saved = checkpoints.read_config(manager, 7)
        assert saved["model"]["width"] == config.model.width
        assert saved["input"]["bgr"] is False
    finally:
        manager.close()


def test_the_classes_come_from_the_classifier_shape(tiny_checkpoint):
    workdir, _, _ = tiny_checkpoint
    assert checkpoints.num_classes_of(workdir / "checkpoints" / "7" / "state") == NUM_CLASSES


def test_a_folder_without_checkpoints_is_one_line(tmp_path):
    with pytest.raises(checkpoints.NoCheckpointError, match="no such folder") as error:
        checkpoints.open_for_reading(tmp_path / "absent")
    assert "\n" not in str(error.value)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(checkpoints.NoCheckpointError, match="no checkpoints at"):
        checkpoints.open_for_reading(tmp_path / "empty")
    with pytest.raises(errors.UserError, match="--checkpoint=.*no such checkpoint"):
        checkpoints.existing_checkpoint(tmp_path / "absent")


def test_saved_arrays_are_restored_exactly(tmp_path):
    state = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "b": np.float32(0.5)}
    manager = checkpoints.create_manager(tmp_path, asynchronous=False)
    checkpoints.save(manager, 3, state, {"next_index": 3}, {"seed": 1})
    manager.wait_until_finished()
    abstract = jax.eval_shape(lambda: state)
    step, restored, data = checkpoints.restore_latest(manager, abstract)
    assert step == 3 and data == {"next_index": 3}
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert checkpoints.read_config(manager, 3)["seed"] == 1  # upgraded with the defaults
    manager.close()


def test_corrupt_latest_checkpoint_is_moved_aside_and_can_be_saved_again(tmp_path, logged):
    state = {"w": np.arange(4.0)}
    manager = checkpoints.create_manager(tmp_path, asynchronous=False)
    for step in (1, 2):
        checkpoints.save(manager, step, {"w": state["w"] * step}, {"next_index": step}, {})
    manager.wait_until_finished()
    for f in (tmp_path / "checkpoints" / "2" / "state").rglob("*"):
        if f.is_file() and f.name != "_CHECKPOINT_METADATA":
            f.write_bytes(b"garbage")
    abstract = jax.eval_shape(lambda: {"w": np.arange(4.0)})
    step, restored, data = checkpoints.restore_latest(manager, abstract)
    assert step == 1 and data == {"next_index": 1}
    np.testing.assert_array_equal(restored["w"], state["w"])
    report = logged()
    assert report.count("\n") == 1 and len(report) < 400, report  # one short line
    assert "checkpoint 2 is unreadable" in report and "unreadable_checkpoints" in report
    assert (tmp_path / "unreadable_checkpoints" / "2" / "state").is_dir()
    checkpoints.save(manager, 2, {"w": state["w"] * 5}, {"next_index": 2}, {})  # no clash
    manager.wait_until_finished()
    assert manager.all_steps() == [1, 2]


def test_checkpoints_of_another_model_are_refused(tmp_path):
    manager = checkpoints.create_manager(tmp_path, asynchronous=False)
    params = {"conv": {"kernel": np.zeros((3, 3, 3, 8), np.float32)}}
    config = {"model": {"name": "icnet", "width": 0.25}}
    checkpoints.save(manager, 2, {"params": params, "batch_stats": {}}, {}, config)
    manager.wait_until_finished()
    wider = {"params": {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 16), np.float32)}}}
    with pytest.raises(checkpoints.CheckpointMismatchError, match="width 0.25") as error:
        checkpoints.restore_latest(manager, wider, expected="icnet width 0.5, 9 classes")
    assert "width 0.5" in str(error.value) and "\n" not in str(error.value)
    assert manager.all_steps() == [2]


def test_a_step_deleted_while_read_is_skipped_for_the_next_newest(tmp_path, logged):
    """A run still training deletes old steps (its keep window) while a job reads them."""
    import json
    import shutil

    from icnet_jax.weights import spec
    from tests.checkpoint_fakes import checkpoint_config, random_state

    config = checkpoint_config()
    states = {step: random_state(config, NUM_CLASSES, seed) for step, seed in ((5, 0), (7, 1))}
    for step, state in states.items():
        checkpoints.write(tmp_path, step, state, json.loads(config.to_json()))
    deleted = []

    def make_abstract(saved, num_classes):
        if not deleted:  # the writer deletes the step being read, between its listing and arrays
            shutil.rmtree(tmp_path / "checkpoints" / "7")
            deleted.append(7)
        return spec.restore_target(saved, num_classes), None

    restored = checkpoints.restore(tmp_path, make_abstract)
    assert deleted == [7] and restored.step == 5
    np.testing.assert_array_equal(
        restored.state.params["conv6_cls"]["kernel"], states[5].params["conv6_cls"]["kernel"]
    )
    assert "unreadable" not in logged()
