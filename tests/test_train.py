"""Training: exact data parallelism, resume after SIGKILL, non-finite loss, corrupt checkpoints."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from configs import default, quickstart
from icnet_jax import checkpoints, train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


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
        model = train_lib.create_model(config, num_classes=9, axis_name=train_lib.AXIS)
        tx = train_lib.create_optimizer(config)
        state = train_lib.create_train_state(jax.random.PRNGKey(0), model, tx, (49, 97))
        state = state.replace(
            params=jax.tree.map(lambda x: x.astype(np.float64), state.params),
            batch_stats=jax.tree.map(lambda x: x.astype(np.float64), state.batch_stats),
            opt_state=tx.init(jax.tree.map(lambda x: x.astype(np.float64), state.params)),
        )
        for n in (1, 2, 4):
            step = train_lib.make_train_step(config, devices=jax.local_devices()[:n])
            new_state, metrics = jax.device_get(step(state, train_lib.shard(batch, n)))
            results.append((new_state.params, new_state.batch_stats, new_state.opt_state, metrics))
    for result in results[1:]:
        chex.assert_trees_all_close(result, results[0], atol=1e-5, rtol=1e-5)


def test_the_step_compiles_once_for_a_replicated_state(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    model = train_lib.create_model(config, num_classes=9, axis_name=train_lib.AXIS)
    tx = train_lib.create_optimizer(config)
    state = train_lib.create_train_state(jax.random.PRNGKey(0), model, tx, (33, 65))
    batch = {
        "image": np.zeros((2, 33, 65, 3), np.float32),
        "label": np.zeros((2, 33, 65), np.int32),
    }
    chex.clear_trace_counter()
    monkeypatch.setattr(train_lib, "train_step", chex.assert_max_traces(train_lib.train_step, 1))
    devices = jax.local_devices()[:2]
    step = train_lib.make_train_step(config, devices=devices)
    state = train_lib.replicate(state, devices)
    for _ in range(3):
        state, _ = step(state, train_lib.shard(batch, 2))


def test_weight_decay_only_on_kernels(tmp_path):
    config = tiny_config(tmp_path)
    tx = train_lib.create_optimizer(config)
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
    manager, _ = checkpoints.checkpoint_manager_for(workdir)
    step = manager.latest_step()
    restored = manager.restore(
        step, args=checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardRestore())
    )
    return step, restored["state"]["params"]


@pytest.mark.slow
def test_sigkill_and_resume_equals_unbroken_run(tmp_path):
    data_dir = tmp_path / "tfds"
    code, output = run_train(tmp_path / "unbroken", data_dir)
    assert code == 0, output
    metrics = json.loads((tmp_path / "unbroken" / "eval" / "val" / "metrics.json").read_text())
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

    step_a, params_a = final_params(tmp_path / "unbroken")
    step_b, params_b = final_params(tmp_path / "broken")
    assert step_a == step_b == 6
    chex.assert_trees_all_close(params_a, params_b, atol=1e-6, rtol=0)


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
    manager, _ = checkpoints.checkpoint_manager_for(tmp_path / "run")
    assert manager.all_steps()
    for step in manager.all_steps():
        restored = manager.restore(
            step, args=checkpoints.ocp.args.Composite(state=checkpoints.ocp.args.StandardRestore())
        )
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["state"]["params"]))


def test_corrupt_latest_checkpoint_falls_back(tmp_path, caplog):
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
    assert "unreadable" in caplog.text
