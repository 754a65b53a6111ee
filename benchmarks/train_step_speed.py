"""The CPU training step of ICNet in JAX against the same network in PyTorch, and where the JAX
step's time goes.

    PYTHONPATH=. python benchmarks/train_step_speed.py [--batch=8 --height=385 --width=481]
        [--runs=7] [--profile] [--json=FILE]

JAX runs `icnet_jax.train.trainer.make_train_step` (the pmapped step `train.py` runs: forward in
training mode, the cascade loss at three resolutions, backward, SGD with momentum and weight
decay) of `configs/camvid.py` (ICNet width 0.5, 11 classes, plain cross entropy). PyTorch runs
`benchmarks/torch_icnet.py`, the same layers with the same starting weights, written as the
public ports write it (NCHW, `nn.BatchNorm2d`, `F.cross_entropy`, `torch.optim.SGD`). The two
steps are called in turn, `--runs` times each after a warm-up, on the same random batch, so both
see the same load; the medians and their ratio are printed, and written to `--json`.

`--profile` adds XLA's per-op profile of the compiled JAX step, grouped by what each op does:
convolutions forward, their input gradients and their weight gradients, the layout copies XLA
inserts for the weight gradients, BatchNorm, interpolation, pooling, the loss and the optimiser.
Op time is summed over threads (CPU time); it can exceed the wall time.

Needs torch (requirements-pretrained.txt).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import statistics
import time

import jax
import numpy as np
import torch

from benchmarks import cpu_profile, torch_icnet
from configs import camvid
from icnet_jax import build, cli
from icnet_jax.cli import flags
from icnet_jax.train import trainer

NUM_CLASSES = 11
IGNORE = 255


def jax_step(args: flags.FlagValues):
    """`(step, state, variables, config)`: the pmapped training step of `configs/camvid.py` at
    this crop, its replicated state, the starting variables as numpy and the config."""
    config = camvid.get_config()
    config.input.crop_size = (args.height, args.width)
    model = build.create_model(config, NUM_CLASSES, axis_name=trainer.AXIS)
    tx = build.create_optimizer(config)
    state = build.create_train_state(jax.random.PRNGKey(0), model, tx, (args.height, args.width))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    step = trainer.make_train_step(config, num_classes=NUM_CLASSES)
    return step, trainer.replicate(state), jax.tree.map(np.asarray, variables), config


def torch_step(config, variables, batch: dict[str, np.ndarray]):
    """A closure running one PyTorch training step of the same network on `batch`."""
    model = torch_icnet.load_flax(torch_icnet.ICNet(NUM_CLASSES, config.model.width), variables)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.optim.lr,
        momentum=config.optim.momentum,
        weight_decay=config.optim.weight_decay,
    )
    images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
    with torch.no_grad():
        sizes = {k: tuple(v.shape[2:]) for k, v in model(images).items()}
    labels = {
        k: torch.from_numpy(torch_icnet.nearest_labels(batch["label"], s).astype(np.int64))
        for k, s in sizes.items()
    }
    weights = dict(config.loss_weights)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_icnet.cascade_loss(model(images), labels, weights, IGNORE)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def cpu_model() -> str:
    """The CPU's model name (Linux), for the record: speeds differ between machines."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return "unknown"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def classify(opcode: str, text: str, functions: set[str]) -> str:
    """The group of one HLO instruction of the training step from its text (with a fusion's
    body) and the functions on the source stacks JAX recorded for it: what it computes, and
    whether it belongs to the backward pass (the ops JAX names `transpose(jvp(...))`)."""
    names = re.findall(r'op_name="([^"]*)"', text)
    backward = ", backward" if any("transpose(jvp" in n for n in names) else ""
    if "convolution(" in text:
        # A weight gradient is a convolution whose window is the whole feature map.
        if re.search(r"window=\{size=\d{2,}x", text):
            return "convolution weight gradients"
        return "convolution input gradients" if backward else "convolutions"
    if "dot(" in text or any("dot_general" in n for n in names):
        return "1x1 convolutions as matmuls" + backward
    if opcode == "transpose" or " transpose(" in text:
        return "layout transposes (for weight gradients)"
    if any("/bn/" in n for n in names):
        return "BatchNorm" + backward
    if functions & {"cascade_loss", "cross_entropy_sum", "ohem_mask"}:
        return "loss at three resolutions" + backward
    if "_resize_axis" in functions:
        return "interpolation" + backward
    if "reduce-window" in text or any("pool" in n.lower() for n in names):
        return "pooling" + backward
    if any("optax" in f or "apply_gradients" in f for f in functions):
        return "optimiser"
    return "other (elementwise, slices, concatenation)" + backward


def profile(step, state, batch, runs: int = 2) -> dict[str, float]:
    """XLA's op time of the compiled step by group (`classify`), summed over threads: printed
    and returned (ms per step)."""
    compiled = step.lower(state, batch).compile()
    groups = cpu_profile.hlo_groups(compiled.as_text(), classify)
    ops, wall = cpu_profile.op_times(compiled, (state, batch), runs)
    totals: collections.Counter = collections.Counter()
    for op, ms in ops.items():
        if op in groups:
            totals[groups[op]] += ms
    cpu_profile.show("XLA training step", dict(totals), wall)
    return dict(totals)


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    rng = np.random.default_rng(0)
    batch: dict[str, np.ndarray] = {
        "image": rng.standard_normal((args.batch, args.height, args.width, 3), dtype=np.float32),
        "label": rng.integers(0, NUM_CLASSES + 1, (args.batch, args.height, args.width)),
    }
    labels = batch["label"]
    batch["label"] = np.where(labels == NUM_CLASSES, IGNORE, labels).astype(np.int32)
    load_before = os.getloadavg()[0]
    step, state, variables, config = jax_step(args)
    sharded = trainer.shard(batch, 1)
    run_torch = torch_step(config, variables, batch)

    def run_jax():
        nonlocal state
        state, metrics = step(state, sharded)
        jax.block_until_ready(metrics)

    compile_s = timed(run_jax)
    run_torch()
    times = collections.defaultdict(list)
    for _ in range(args.runs):
        times["jax"].append(timed(run_jax))
        times["torch"].append(timed(run_torch))
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    both = {k: (median[k], times[k]) for k in median}
    result = {
        "batch": args.batch,
        "crop": [args.height, args.width],
        "runs": args.runs,
        "torch_threads": torch.get_num_threads(),
        "jax_first_step_s": compile_s,
        "time_ms": {k: {"median": m, "all": [t * 1e3 for t in v]} for k, (m, v) in both.items()},
        "jax_over_torch": median["jax"] / median["torch"],
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [load_before, os.getloadavg()[0]],
    }
    print(f"batch {args.batch} of {args.height}x{args.width}, {args.runs} steps each, in turn:")
    print(f"  JAX   {median['jax']:8.1f} ms (first step with compilation {compile_s:.1f} s)")
    print(f"  torch {median['torch']:8.1f} ms ({torch.get_num_threads()} threads)")
    print(f"  JAX / torch: {result['jax_over_torch']:.2f}")
    if args.profile:
        result["xla_op_ms"] = profile(step, state, sharded)
    if args.json:
        pathlib.Path(args.json).absolute().parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    flags.DEFINE_integer("batch", 8, "Images per step.")
    flags.DEFINE_integer("height", 385, "Crop height.")
    flags.DEFINE_integer("width", 481, "Crop width.")
    flags.DEFINE_integer("runs", 7, "Timed steps per framework.")
    flags.DEFINE_bool("profile", False, "XLA's per-op profile of the step.")
    cli.define_output("json", None, "Write the figures here.", kind="file")
    cli.run(main)
