"""Training: the pmapped step, data sharding and the training loop (the model, optimiser and
state a config describes are in `build.py`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from icnet_jax import config_checks, errors
from icnet_jax.build import (  # noqa: F401 - the model and state of a config, used here and re-exported
    TrainState,
    create_model,
    create_optimizer,
    create_train_state,
    inference_model,
    learning_rate_schedule,
)
from icnet_jax.data import class_stats, datasets, pipeline
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.evaluation import loop
from icnet_jax.evaluation.evaluator import Evaluator
from icnet_jax.train import run_control
from icnet_jax.train.losses import Ohem, cascade_loss
from icnet_jax.weights import checkpoints, finetune, imagenet, spec
from icnet_jax.weights.spec import WeightsSpec

_log = logging.getLogger(__name__)

Array = jax.Array
AXIS = "batch"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train_step(
    state: TrainState,
    batch: Mapping[str, Array],
    *,
    loss_weights: Mapping[str, float],
    ignore_label: int,
    align_corners: bool,
    schedule: optax.Schedule,
    class_weights: np.ndarray | None = None,
    ohem: Ohem | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One SGD step on this device's part of the global batch (run under `pmap(axis_name=AXIS)`).

    The loss divides by the global count of labelled pixels (the global sum of pixel weights with
    `class_weights` or `ohem`) and gradients are summed over devices, so the update equals that of
    one device holding the whole global batch.
    """

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
        )
        loss, per_branch = cascade_loss(
            logits,
            batch["label"],
            loss_weights,
            ignore_label=ignore_label,
            align_corners=align_corners,
            axis_name=AXIS,
            class_weights=class_weights,
            ohem=ohem,
        )
        return loss, (per_branch, updates["batch_stats"])

    (loss, (per_branch, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    grads = jax.lax.psum(grads, AXIS)
    metrics = jax.lax.psum({"loss": loss, **{f"loss_{k}": v for k, v in per_branch.items()}}, AXIS)
    metrics["lr"] = schedule(state.step)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics


def make_train_step(
    config: ml_collections.ConfigDict, devices=None, *, num_classes: int | None = None
):
    """The pmapped step: unreplicated state in and out, batch split over `devices` (default: all
    local devices). `num_classes` (the dataset's) checks the length of explicit class weights."""
    step = functools.partial(
        train_step,
        loss_weights=dict(config.loss_weights),
        ignore_label=config.ignore_label,
        align_corners=config.model.align_corners,
        schedule=learning_rate_schedule(config),
        class_weights=class_stats.weights_from_config(config, num_classes),
        ohem=Ohem.from_config(config.loss),
    )
    return jax.pmap(step, axis_name=AXIS, in_axes=(None, 0), out_axes=(None, None), devices=devices)


def replicate(state: TrainState, devices=None) -> TrainState:
    """`state` placed on `devices` (default: all local devices) exactly as the pmapped step
    returns it, so that the second step does not compile again for a new placement.

    pmap (now jit over a mesh) names its mesh axis after `axis_name`: a replica on a mesh with
    any other axis name is a different sharding to it.
    """
    mesh = jax.sharding.Mesh(np.asarray(devices or jax.local_devices()), (AXIS,))
    return jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def shard(batch: Mapping[str, np.ndarray], num_devices: int | None = None) -> dict[str, np.ndarray]:
    """`[B_local, ...] -> [devices, B_local / devices, ...]` (default: all local devices)."""
    n = num_devices or jax.local_device_count()
    size = len(next(iter(batch.values())))
    if size % n:
        raise ValueError(f"the per-host batch {size} does not split over {n} local devices")
    return {k: np.asarray(v).reshape(n, size // n, *np.shape(v)[1:]) for k, v in batch.items()}


@jax.jit
def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_finite(history: list[tuple[int, dict]]) -> None:
    for step, metrics in history:
        if not np.isfinite(metrics["loss"]):
            raise NonFiniteLossError(
                f"the loss became non-finite ({metrics['loss']}) at step {step}; training "
                "stopped, the last good checkpoint is kept (lower config.optim.lr or check labels)"
            )


def _check_config(config: ml_collections.ConfigDict) -> None:
    """What needs no computation, checked before anything is compiled or written."""
    config_checks.check(config)
    devices = jax.device_count()
    if config.batch_size % devices:
        raise errors.UserError(
            f"config.batch_size={config.batch_size} does not split over the {devices} devices; "
            f"give a multiple of {devices} (--config.batch_size)"
        )
    if config.init_checkpoint:
        manager, _ = checkpoints.open_for_reading(config.init_checkpoint)
        manager.close()


def _model_description(config: ml_collections.ConfigDict, num_classes: int) -> str:
    return WeightsSpec.from_config(config, num_classes).describe()


@dataclasses.dataclass
class _Start:
    """Where training starts: the state (not yet replicated), the data iterator's saved position
    (None: from the beginning) and the checkpoint manager of the workdir."""

    step: int
    state: TrainState
    data_state: Any
    manager: Any


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path
) -> dict[str, Any]:
    """Trains (resuming from the latest checkpoint in `workdir`), then evaluates every branch.

    Returns the final evaluation `{branch: metrics}` (empty without an eval split, or when the
    workdir's checkpoint is already at `config.num_steps`).
    Raises:
      errors.UserError: a config, split, path or workdir that cannot be used (nothing written).
      checkpoints.CheckpointMismatchError: the workdir holds another model (nothing written).
      run_control.Stopped: SIGTERM/SIGINT; the step reached was checkpointed (run again).
      NonFiniteLossError: the loss became NaN or infinite.
    """
    workdir = pathlib.Path(workdir)
    errors.check_writable(workdir, "--workdir")
    _check_config(config)
    finetune.check_resume(workdir, config)  # the saved weights settings, before any write
    datasets.check_splits(config)
    source, info = datasets.config_source(config, config.dataset.train_split)
    # Counts the classes' pixels once (stored with the data) and checks explicit weights.
    class_stats.weights_from_config(config, info.num_classes)
    start = _start(config, workdir, info.num_classes)
    if start is None:
        return {}
    config_dict = json.loads(config.to_json())
    config_dict[spec.RECORD] = spec.classes_record(info)  # the run's classes, for its jobs
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config_dict, indent=2))
    iterator = pipeline.train_dataset(
        source,
        InputSpec.from_config(config),
        global_batch_size=config.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        seed=config.seed,
        worker_count=config.input.worker_count,
    )
    if start.data_state:
        iterator.set_state(start.data_state)
    writer = run_control.MetricsWriter(workdir, start.step)
    evaluation = _Evaluation(config, info, writer, workdir)
    try:
        state = _train(config, start, iterator, writer, config_dict, info, evaluation)
    except BaseException:
        writer.close()
        raise
    results = evaluation(state, config.num_steps)
    writer.close()
    return results


def _start(config: ml_collections.ConfigDict, workdir: pathlib.Path, num_classes: int):
    """The latest checkpoint of `workdir`, else a fresh state (with `init_backbone` and
    `init_checkpoint` loaded); None when the checkpoint is already at `config.num_steps`.

    Nothing is created in the workdir before its checkpoints and init_checkpoint are checked.
    """
    model = create_model(config, num_classes, axis_name=AXIS)
    tx = create_optimizer(config)
    rng = jax.random.PRNGKey(config.seed)
    crop = tuple(config.input.crop_size)
    abstract = jax.eval_shape(
        functools.partial(create_train_state, model=model, tx=tx, image_size=crop), rng
    )
    manager = None
    if (workdir / "checkpoints").is_dir():
        manager = checkpoints.create_manager(workdir, max_to_keep=config.keep_checkpoints)
        restored = checkpoints.restore_latest(
            manager, abstract, expected=_model_description(config, num_classes)
        )
        if restored:
            step, state, data_state = restored
            if step >= config.num_steps:  # nothing to train: nothing written or relabelled
                manager.close()
                _log.info(run_control.trained_already(step, config.num_steps, manager.directory))
                return None
            _log.info(f"resuming from step {step} in {manager.directory}")
            return _Start(step, state, data_state, manager)
    if config.init_checkpoint:  # before compiling anything
        finetune.check_fits(abstract, config.init_checkpoint, config)
    state = create_train_state(rng, model, tx, crop)
    if config.get("init_backbone"):  # an ImageNet ResNet-50 into the trunk
        state, _ = imagenet.load_backbone(state, config.init_backbone, config)
    if config.init_checkpoint:
        # Converted release weights, a pruned model or another run; classifiers of another
        # shape (number of classes) keep their fresh initialisation.
        state, _ = finetune.load_pretrained(state, config.init_checkpoint, config=config)
    if manager is None:
        manager = checkpoints.create_manager(workdir, max_to_keep=config.keep_checkpoints)
    return _Start(0, state, None, manager)


def _train(config, start: _Start, iterator, writer, config_dict, info, evaluation) -> TrainState:
    """Steps `start.step + 1 ... config.num_steps`: logs, checkpoints, evaluates on the way.

    Returns the replicated final state.
    """
    state = replicate(start.state)
    p_train_step = make_train_step(config, num_classes=info.num_classes)
    log = _Log(config, writer, start.step)
    manager = start.manager
    try:
        with run_control.StopSignals() as signals:
            for step in range(start.step + 1, config.num_steps + 1):
                state, metrics = p_train_step(state, shard(next(iterator)))
                stop = signals.stop_at(step, manager)
                at_checkpoint = (
                    step % config.checkpoint_every == 0 or step == config.num_steps or stop
                )
                log.add(step, metrics, flush=step % config.log_every == 0 or at_checkpoint)
                if at_checkpoint:
                    if not _all_finite(state.params):
                        raise NonFiniteLossError(
                            f"the parameters became non-finite at step {step}; training "
                            "stopped, the last good checkpoint is kept (lower config.optim.lr)"
                        )
                    checkpoints.save(manager, step, state, iterator.get_state(), config_dict)
                if stop:
                    raise run_control.Stopped(step)
                if config.eval_every and step % config.eval_every == 0 and step < config.num_steps:
                    evaluation(state, step)
    finally:
        log.close()
        checkpoints.finish(manager)
    return state


class _Log:
    """The progress bar and the metrics writer, fed each step's (on-device) metrics; fetches
    and checks them only every `log_every` steps, so that the devices never wait."""

    def __init__(self, config: ml_collections.ConfigDict, writer, start: int):
        self.batch_size = config.batch_size
        self.writer = writer
        self.history: list[tuple[int, dict]] = []
        self.last_time, self.last_step = time.time(), start
        self.bar = tqdm(
            total=config.num_steps, initial=start, desc="training", disable=jax.process_index() != 0
        )

    def add(self, step: int, metrics: dict, flush: bool) -> None:
        self.history.append((step, metrics))
        if flush:
            history = [(s, jax.device_get(m)) for s, m in self.history]
            self.history = []
            _check_finite(history)
            now = time.time()
            images_per_s = (
                (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
            )
            self.last_time, self.last_step = now, step
            scalars = {k: float(v) for k, v in history[-1][1].items()}
            scalars["images_per_s"] = images_per_s
            self.writer.write(step, scalars)
            losses = {
                k.removeprefix("loss_"): f"{v:.3f}"
                for k, v in scalars.items()
                if k.startswith("loss_")
            }
            self.bar.set_postfix(
                losses | {"lr": f"{scalars['lr']:.2e}", "img/s": f"{images_per_s:.1f}"}
            )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Evaluation:
    """Training's evaluation on `config.dataset.eval_split`: one `Evaluator`, built at the first
    evaluation and used for every later one (compiled once), its metrics logged and written to
    `workdir/eval/<split>/metrics.json`."""

    def __init__(self, config: ml_collections.ConfigDict, info, writer, workdir: pathlib.Path):
        self.config, self.info, self.writer, self.workdir = config, info, writer, workdir
        self.evaluator: Evaluator | None = None

    def __call__(self, state: TrainState, step: int) -> dict[str, Any]:
        split = self.config.dataset.eval_split
        if not split:
            return {}
        if self.evaluator is None:
            self.evaluator = Evaluator(self.config, self.info.num_classes, split)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        results = self.evaluator(variables)
        self.writer.write(step, {f"eval/{b}/miou": r["miou"] for b, r in results.items()})
        if jax.process_index() == 0:
            summary = loop.make_summary(step, split, results, **self.evaluator.protocol())
            loop.write_metrics(self.workdir / "eval" / split, summary)
            _log.info(
                f"\nstep {step}, {split}:\n" + loop.format_table(results, self.info.class_names)
            )
        return results
