"""`icnet_jax.load` and the job's config of a run (`inference/saved_run.py`, `inference/model.py`):
the run's record wins, the command line only changes it (each change listed), a weights-spec key
from the command line is refused, and a checkpoint saved before the record still loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

import icnet_jax
from configs import quickstart
from icnet_jax import errors
from icnet_jax.data import taxonomy
from icnet_jax.inference import saved_run
from icnet_jax.inference.predict import Segmenter
from icnet_jax.weights import checkpoints, spec
from tests.checkpoint_fakes import NUM_CLASSES, checkpoint_config, random_state

SAVED = {
    "model": {"width": 0.25, "branch": "sub4"},
    "input": {"mean": [1, 2, 3], "bgr": False, "eval_size": None, "crop_size": [33, 65]},
    "dataset": {"name": "custom", "builder_kwargs": {"num_val": 4}},
    "ignore_label": 255,
}


def test_the_run_config_needs_no_command_line():
    config, settings, changes = saved_run.run_config(
        SAVED, saved_run.CommandLine(None, file_given=False)
    )
    assert config.dataset.name == "custom" and config.dataset.builder_kwargs.num_val == 4
    assert config.model.width == 0.25 and config.input.mean == (1, 2, 3)
    assert changes == [] and {s.key for s in settings} >= {"model.width", "input.mean"}


def test_overrides_change_the_run_and_are_listed():
    command_line = saved_run.CommandLine(
        None, file_given=False, overrides={"dataset.builder_kwargs.num_val": 40}
    )
    config, _, changes = saved_run.run_config(SAVED, command_line)
    assert config.dataset.builder_kwargs.num_val == 40
    assert [str(c) for c in changes] == ["dataset.builder_kwargs.num_val: run=4, now=40"]
    assert "dataset.builder_kwargs.num_val: run=4, now=40" in saved_run.describe_changes(changes)


def test_a_config_file_changes_only_what_differs_and_keeps_the_weights_settings():
    given = quickstart.get_config()  # street dataset, BGR, the ImageNet mean
    config, settings, changes = saved_run.run_config(SAVED, saved_run.CommandLine(given))
    keys = {c.key for c in changes}
    assert "dataset.name" in keys and config.dataset.name == given.dataset.name
    assert config.model.width == 0.25 and config.input.bgr is False  # the weights' own
    assert not keys & set(spec.CONFIG_KEYS)
    given.model.freeze_bn_stats = True  # a weights setting the inference keys do not list
    config, _, changes = saved_run.run_config(SAVED, saved_run.CommandLine(given))
    assert config.model.freeze_bn_stats is False and "model.freeze_bn_stats" not in str(changes)
    assert any(s.key == "input.mean" and s.differs for s in settings)


@pytest.mark.parametrize(
    "command_line",
    [
        saved_run.CommandLine(None, file_given=False, overrides={"input.bgr": True}),
        saved_run.CommandLine(None, file_given=False, overrides={"model.stride_on": "3x3"}),
        saved_run.CommandLine(quickstart.get_config(), wins=("input.bgr",)),
        saved_run.CommandLine(quickstart.get_config(), wins=("model",)),
    ],
)
def test_a_weights_spec_key_from_the_command_line_is_refused(command_line):
    with pytest.raises(errors.UserError, match="describe"):
        saved_run.run_config(SAVED, command_line)


def test_an_override_equal_to_the_run_is_no_change():
    command_line = saved_run.CommandLine(None, file_given=False, overrides={"input.bgr": False})
    _, _, changes = saved_run.run_config(SAVED, command_line)
    assert changes == []


def _write(workdir, record: bool):
    config = checkpoint_config()
    saved = json.loads(config.to_json())
    names = [f"thing{i}" for i in range(NUM_CLASSES)]
    palette = (np.arange(NUM_CLASSES * 3).reshape(NUM_CLASSES, 3) * 5).astype(np.uint8)
    if record:
        saved[spec.RECORD] = spec.classes_record(taxonomy.custom_info("mine", names, palette))
    checkpoints.write(workdir, 7, random_state(config, NUM_CLASSES), saved)
    return names, palette


def test_the_record_gives_class_names_and_palette(tmp_path):
    names, palette = _write(tmp_path, record=True)
    model = icnet_jax.load(tmp_path)
    assert model.class_names == tuple(names) and model.num_classes == NUM_CLASSES
    np.testing.assert_array_equal(model.palette, palette)


def test_a_checkpoint_without_the_record_falls_back_to_the_dataset_table(tiny_checkpoint):
    model = icnet_jax.load(tiny_checkpoint[0])
    assert model.class_names == taxonomy.STREET.class_names
    np.testing.assert_array_equal(model.palette, taxonomy.STREET.palette)


def test_the_model_segments_as_predict_does(tiny_checkpoint):
    workdir, _, config = tiny_checkpoint
    model = icnet_jax.load(workdir)
    assert isinstance(model, icnet_jax.Model) and model.step == 7
    assert model.config.input.mean == (0.0, 0.0, 0.0) and model.config.input.bgr is False
    image = np.random.default_rng(0).integers(0, 256, (41, 70, 3), dtype=np.uint8)
    segmenter = Segmenter(saved_run.load_checkpoint(workdir, config))
    labels = model.segment(image)
    np.testing.assert_array_equal(labels, segmenter(image))
    probabilities = model.probabilities(image)
    assert probabilities.shape == (41, 70, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), labels)
    logits = model.module.apply(model.variables, np.zeros((1, 33, 65, 3), np.float32))
    assert logits.shape[-1] == NUM_CLASSES
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.segment(image[..., 0])


def test_a_weights_override_is_refused_at_load(tiny_checkpoint):
    with pytest.raises(errors.UserError, match="input.bgr"):
        icnet_jax.load(tiny_checkpoint[0], overrides={"input.bgr": True})


def test_read_run_reads_no_array(tiny_checkpoint):
    config, num_classes, step = saved_run.read_run(tiny_checkpoint[0])
    assert (num_classes, step) == (NUM_CLASSES, 7)
    assert config.model.width == 0.25 and config.input.bgr is False


@pytest.mark.slow
def test_benchmark_times_the_runs_own_network(tiny_checkpoint, tmp_path):
    from tests import scripts

    done = scripts.run(
        "benchmark.py", f"--checkpoint={tiny_checkpoint[0]}", "--height=65", "--width=129",
        "--runs=1", "--min_runs=1", "--warmup=0", f"--json={tmp_path / 'b.json'}",
        "--noprogress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert result["model"] == "run_step7" and result["width"] == 0.25
    assert result["branch"] == "sub124"


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--config.input.bgr=True", "--command_line_wins=model.stride_on"])
def test_predict_refuses_a_weights_key_from_the_command_line(tiny_checkpoint, tmp_path, flag):
    from tests import scripts

    image = tmp_path / "in.png"
    image.write_bytes(b"")  # never read: the refusal comes first
    done = scripts.run(
        "predict.py", f"--checkpoint={tiny_checkpoint[0]}", f"--input={image}",
        f"--output={tmp_path / 'out'}", flag,
    )  # fmt: skip
    assert "describe" in scripts.one_error_line(done)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_pruned_run_keeps_its_record(tmp_path):
    from icnet_jax.weights.prune import prune_checkpoint

    config = checkpoint_config(**{"model.width": 0.5})
    saved = json.loads(config.to_json())
    names = [f"thing{i}" for i in range(NUM_CLASSES)]
    saved[spec.RECORD] = spec.classes_record(taxonomy.custom_info("mine", names))
    checkpoints.write(tmp_path / "run", 7, random_state(config, NUM_CLASSES), saved)
    prune_checkpoint(tmp_path / "run", 0.5, tmp_path / "pruned", verbose=False)
    model = icnet_jax.load(tmp_path / "pruned")  # nothing but the checkpoint
    assert model.class_names == tuple(names) and model.config.model.width == 0.25
