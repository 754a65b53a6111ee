"""Training: exact data parallelism, resume after SIGKILL, non-finite loss, corrupt checkpoints."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from configs import quickstart
from icnet_jax import cli, default
from icnet_jax.train import trainer
from icnet_jax.weights import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(data_dir, **overrides):
    config = quickstart.get_config()
    config.dataset.data_dir = str(data_dir)
    kw = config.dataset.builder_kwargs
    kw.num_train, kw.num_val, kw.height, kw.width = 16, 4, 64, 128
    config.input.crop_size = (65, 129)
    config.batch_size = 4
    config.num_steps = 6
    config.log_every = 1
    config.checkpoint_every = 2
    return default.override(config, overrides)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "loss.class_weights": "1,2,1,1,3,1,1,0.5,1",
            "loss.ohem": True,
            "loss.ohem_min_kept": 2000,
        },
    ],
    ids=["plain", "class_weights_and_ohem"],
)
def test_one_two_four_devices_give_the_same_step(tmp_path, options):
    """Loss, parameters, BatchNorm statistics and momentum after one step agree to 1e-5.

    In float64: in float32 a randomly initialised 50-layer network amplifies the rounding of
    different reduction orders (1e-2 relative in early-layer gradients), which would hide whether
    the arithmetic itself is exact.
    """
    config = tiny_config(tmp_path, **{"model.dtype": "float64", **options})
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(4, 49, 97, 3)),
        "label": rng.integers(0, 9, size=(4, 49, 97)).astype(np.int32),
    }
    batch["label"][0, :30] = 255  # uneven ignored pixels across devices
    results = []
    with jax.enable_x64(True):
        model = trainer.create_model(config, num_classes=9, axis_name=trainer.AXIS)
        tx = trainer.create_optimizer(config)
        state = trainer.create_train_state(jax.random.PRNGKey(0), model, tx, (49, 97))
        state = state.replace(
            params=jax.tree.map(lambda x: x.astype(np.float64), state.params),
            batch_stats=jax.tree.map(lambda x: x.astype(np.float64), state.batch_stats),
            opt_state=tx.init(jax.tree.map(lambda x: x.astype(np.float64), state.params)),
        )
        for n in (1, 2, 4):
            step = trainer.make_train_step(config, devices=jax.local_devices()[:n])
            new_state, metrics = jax.device_get(step(state, trainer.shard(batch, n)))
            results.append((new_state.params, new_state.batch_stats, new_state.opt_state, metrics))
    for result in results[1:]:
        chex.assert_trees_all_close(result, results[0], atol=1e-5, rtol=1e-5)


def test_the_step_compiles_once_for_a_replicated_state(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    model = trainer.create_model(config, num_classes=9, axis_name=trainer.AXIS)
    tx = trainer.create_optimizer(config)
    state = trainer.create_train_state(jax.random.PRNGKey(0), model, tx, (33, 65))
    batch = {
        "image": np.zeros((2, 33, 65, 3), np.float32),
        "label": np.zeros((2, 33, 65), np.int32),
    }
    chex.clear_trace_counter()
    monkeypatch.setattr(trainer, "train_step", chex.assert_max_traces(trainer.train_step, 1))
    devices = jax.local_devices()[:2]
    step = trainer.make_train_step(config, devices=devices)
    state = trainer.replicate(state, devices)
    for _ in range(3):
        state, _ = step(state, trainer.shard(batch, 2))


def test_weight_decay_only_on_kernels(tmp_path):
    config = tiny_config(tmp_path)
    tx = trainer.create_optimizer(config)
    params = {"conv": {"kernel": np.ones((2,)), "bias": np.ones((2,))}}
    updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
    assert np.all(np.asarray(updates["conv"]["kernel"]) < 0)
    assert np.all(np.asarray(updates["conv"]["bias"]) == 0)


def run_train(workdir, data_dir, *extra, wait=True):
    command = [
        sys.executable,
        "train.py",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={data_dir}",
        "--config.dataset.builder_kwargs.num_train=16",
        "--config.dataset.builder_kwargs.num_val=4",
        "--config.dataset.builder_kwargs.height=64",
        "--config.dataset.builder_kwargs.width=128",
        "--config.input.crop_size=(65, 129)",
        "--config.batch_size=4",
        "--config.num_steps=6",
        "--config.checkpoint_every=2",
        "--config.log_every=1",
        *extra,
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if wait:
        output, _ = process.communicate(timeout=600)
        return process.returncode, output
    return process


def final_params(workdir):
    manager, _ = checkpoints.open_for_reading(workdir)
    step = manager.latest_step()
    restored = manager.restore(
        step, args=checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardRestore())
    )
    return step, restored["state"]["params"]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """One uninterrupted tiny run (6 steps, checkpoints at 2, 4, 6): `(workdir, data_dir)`."""
    root = tmp_path_factory.mktemp("unbroken")
    data_dir = root / "tfds"
    code, output = run_train(root / "run", data_dir)
    assert code == 0, output
    return root / "run", data_dir


def copy_run(source, target):
    shutil.copytree(source, target)
    return target


def snapshot(workdir):
    """Every file under `workdir` with its bytes."""
    return {p: p.read_bytes() for p in sorted(pathlib.Path(workdir).rglob("*")) if p.is_file()}


def logged_steps(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]


def assert_same_final_params(a, b):
    step_a, params_a = final_params(a)
    step_b, params_b = final_params(b)
    assert step_a == step_b == 6
    chex.assert_trees_all_equal(params_a, params_b)  # bit-exact


@pytest.mark.slow
def test_sigkill_and_resume_equals_unbroken_run(tmp_path, unbroken):
    workdir, data_dir = unbroken
    metrics = json.loads((workdir / "eval" / "val" / "metrics.json").read_text())
    assert set(metrics["branches"]) == {"sub4", "sub24", "sub124"}

    process = run_train(tmp_path / "broken", data_dir, wait=False)
    deadline = time.time() + 600
    while not (tmp_path / "broken" / "checkpoints" / "4").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()[0]
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, output = run_train(tmp_path / "broken", data_dir)
    assert code == 0, output
    assert "resuming from step" in output
    assert_same_final_params(workdir, tmp_path / "broken")
    assert logged_steps(tmp_path / "broken") == [1, 2, 3, 4, 5, 6]  # each step once


@pytest.mark.slow
def test_sigterm_saves_the_step_reached_and_resume_equals_unbroken_run(tmp_path, unbroken):
    workdir, data_dir = unbroken
    run = tmp_path / "run"
    process = run_train(run, data_dir, "--config.checkpoint_every=100", wait=False)
    deadline = time.time() + 600
    while not (run / "metrics.jsonl").exists() or not logged_steps(run):
        assert process.poll() is None and time.time() < deadline, process.communicate()[0]
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == cli.EXIT_INTERRUPTED, output
    stopped = re.search(r"stopped at step (\d+), checkpoint saved", output)
    assert stopped, output
    step = int(stopped.group(1))
    assert 1 <= step < 6 and "Traceback" not in output
    manager, _ = checkpoints.open_for_reading(run)
    assert manager.all_steps() == [step]
    assert logged_steps(run) == list(range(1, step + 1))

    code, output = run_train(run, data_dir)
    assert code == 0, output
    assert f"resuming from step {step}" in output
    assert_same_final_params(workdir, run)
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_training_ends(tmp_path, unbroken):
    workdir, data_dir = unbroken
    run = copy_run(workdir, tmp_path / "run")
    for f in (run / "checkpoints" / "6" / "state").rglob("*"):
        if f.is_file() and "ocdbt" not in f.name:
            f.write_bytes(b"garbage")
    for _attempt in range(2):  # the rerun after a recovery must work as well
        code, output = run_train(run, data_dir)
        assert code == 0, output
        assert_same_final_params(workdir, run)
    assert (run / "unreadable_checkpoints" / "6").is_dir()
    assert output.count("unreadable") == 0  # reported once, on the first rerun only


@pytest.mark.slow
def test_a_workdir_of_another_width_is_refused_and_nothing_written(tmp_path, unbroken):
    workdir, data_dir = unbroken
    run = copy_run(workdir, tmp_path / "run")
    before = snapshot(run)
    code, output = run_train(run, data_dir, "--config.model.width=0.5")
    assert code == cli.EXIT_USAGE, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert "width 0.25" in errors[0] and "width 0.5" in errors[0], errors
    assert "--workdir" in errors[0] and "init_checkpoint" in errors[0]
    assert snapshot(run) == before


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoints(tmp_path):
    code, output = run_train(
        tmp_path / "run",
        tmp_path / "tfds",
        "--config.optim.lr=1e12",
        "--config.checkpoint_every=1",
    )
    assert code != 0
    assert "became non-finite" in output and "at step" in output
    manager, _ = checkpoints.open_for_reading(tmp_path / "run")
    assert manager.all_steps()
    for step in manager.all_steps():
        restored = manager.restore(
            step, args=checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardRestore())
        )
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["state"]["params"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, key, saved, new",
    [
        ("--config.model.stride_on=3x3", "model.stride_on", "'1x1'", "'3x3'"),
        ("--config.input.mean=(1, 2, 3)", "input.mean", "(", "(1, 2, 3)"),
        ("--config.model.freeze_bn_stats=True", "model.freeze_bn_stats", "'none'", "'all'"),
    ],
)
def test_a_resume_with_other_weights_settings_is_refused_and_nothing_written(
    tmp_path, unbroken, flag, key, saved, new
):
    workdir, data_dir = unbroken
    run = copy_run(workdir, tmp_path / "run")
    before = snapshot(run)
    code, output = run_train(run, data_dir, flag, "--config.num_steps=8")
    assert code == cli.EXIT_USAGE, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert f"{key}: saved {saved}" in errors[0] and f"new {new}" in errors[0], errors
    assert "--workdir" in errors[0] and f"--config.init_checkpoint={run}" in errors[0]
    assert snapshot(run) == before  # byte-identical


@pytest.mark.slow
def test_a_resume_with_another_schedule_goes_on(tmp_path, unbroken):
    workdir, data_dir = unbroken
    run = copy_run(workdir, tmp_path / "run")
    code, output = run_train(run, data_dir, "--config.num_steps=7", "--config.optim.lr=0.001")
    assert code == 0, output
    assert "resuming from step 6" in output and final_params(run)[0] == 7
