"""The device check's parts that run in children of `device_check.py` (`--part prepare|train`):
drawing the datasets, and the training step's speed and memory. Also the sizes of the check."""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]

# Sizes of the real check and of the CPU test.
FULL = {
    "height": 1024,
    "width": 2048,
    "width_scale": 1.0,
    "runs": 100,
    "min_runs": 50,
    "warmup": 3,
    "time_budget": 5.0,
    "train_batch": 16,
    "train_crop": 1025,
    "model_width": 0.5,
    "preloaded_steps": 20,
    "pipeline_steps": 10,
    "pipeline_images": 32,
    "quickstart": [],
}
TINY = {
    "height": 64,
    "width": 128,
    "width_scale": 0.125,
    "runs": 3,
    "min_runs": 3,
    "warmup": 1,
    "time_budget": 0.0,
    "train_batch": 2,
    "train_crop": 65,
    "model_width": 0.125,
    "preloaded_steps": 2,
    "pipeline_steps": 2,
    "pipeline_images": 4,
    "quickstart": [
        "num_steps=2",
        "batch_size=4",  # splits over 1, 2 or 4 devices (the tests simulate 4)
        "input.crop_size=(65, 129)",
        "dataset.builder_kwargs.num_train=4",
        "dataset.builder_kwargs.num_val=2",
        "dataset.builder_kwargs.height=64",
        "dataset.builder_kwargs.width=128",
        "model.width=0.125",
        "checkpoint_every=2",
        "log_every=1",
    ],
}


def parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def part_prepare(args: argparse.Namespace) -> None:
    """Draws the pipeline's street dataset at the inference size and the quickstart's dataset."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import pipeline_throughput

    from configs import quickstart
    from icnet_jax import default
    from icnet_jax.data import datasets

    pipeline_throughput.street_source(
        args.pipeline_images, args.data_dir, size=(args.height, args.width)
    )
    config = default.override(quickstart.get_config(), dict(map(parse_override, args.override)))
    for split in (config.dataset.train_split, config.dataset.eval_split):
        datasets.config_source(config, split)


def part_train(args: argparse.Namespace) -> dict[str, Any]:
    """Training speed and peak memory of the Cityscapes recipe on one device (see module doc)."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import jax
    import pipeline_throughput

    from icnet_jax.benchmarking import profiling

    sizes: dict[str, Any] = TINY if args.tiny else FULL
    batch, crop = sizes["train_batch"], sizes["train_crop"]
    config = _train_config(args.dtype, sizes)
    device = jax.local_devices()[0]
    result: dict[str, Any] = {
        "dtype": args.dtype,
        "batch": batch,
        "crop": crop,
        "device": str(device),
    }

    def save() -> None:
        pathlib.Path(args.result).write_text(json.dumps(result))

    timer = _StepTimer(config, device, batch, crop)
    preloaded = timer.random_batches(2)
    counter = iter(range(10**9))
    result["preloaded_images_per_s"] = timer.images_per_s(
        sizes["preloaded_steps"], lambda: preloaded[next(counter) % 2]
    )
    peak = profiling.peak_memory_bytes(device)
    result["peak_mib"] = peak / 2**20 if peak is not None else None
    result["peak_source"] = "measured" if peak is not None else None
    save()

    source = pipeline_throughput.street_source(
        sizes["pipeline_images"], args.data_dir, size=(sizes["height"], sizes["width"])
    )
    result["pipeline_workers"] = args.workers
    result["pipeline_fed_images_per_s"] = timer.pipeline_fed(source, args.workers, sizes)
    save()
    result["pipeline_alone_images_per_s"] = pipeline_throughput.throughput(
        source,
        workers=args.workers,
        crop=crop,
        batch_size=batch,
        num_batches=sizes["pipeline_steps"],
    )
    # Fed at >= 90% of the preloaded rate: the step limits training, else the pipeline does.
    fed, pre = result["pipeline_fed_images_per_s"], result["preloaded_images_per_s"]
    result["bottleneck"] = "step" if fed >= 0.9 * pre else "input pipeline"
    save()
    return result


def _train_config(dtype: str, sizes: dict[str, Any]):
    """The Cityscapes recipe at the check's batch, crop, width and `dtype`."""
    from configs import cityscapes
    from icnet_jax import default

    crop = sizes["train_crop"]
    return default.override(
        cityscapes.get_config(),
        {
            "model.dtype": dtype,
            "model.width": sizes["model_width"],
            "batch_size": sizes["train_batch"],
            "input.crop_size": (crop, crop),
        },
    )


class _StepTimer:
    """The recipe's pmapped training step on one device, timed over batches from any source."""

    NUM_CLASSES = 19

    def __init__(self, config, device, batch: int, crop: int):
        import jax

        from icnet_jax.train import trainer

        self.config, self.device, self.batch, self.crop = config, device, batch, crop
        model = trainer.create_model(config, self.NUM_CLASSES, axis_name=trainer.AXIS)
        state = trainer.create_train_state(
            jax.random.PRNGKey(0), model, trainer.create_optimizer(config), (crop, crop)
        )
        self.step = trainer.make_train_step(config, devices=[device])
        self.state = trainer.replicate(state, [device])

    def random_batches(self, count: int) -> list[Any]:
        """`count` random batches, already on the device."""
        import jax
        import numpy as np

        from icnet_jax.train import trainer

        rng = np.random.default_rng(0)
        shape = (self.batch, self.crop, self.crop)
        return [
            jax.device_put(
                trainer.shard(
                    {
                        "image": rng.normal(0, 50, (*shape, 3)).astype(np.float32),
                        "label": rng.integers(0, self.NUM_CLASSES, shape).astype(np.int32),
                    },
                    1,
                ),
                self.device,
            )
            for _ in range(count)
        ]

    def images_per_s(self, steps: int, next_batch) -> float:
        """Images/s over `steps` steps on `next_batch()`, after two warm-up steps."""
        import jax

        for _ in range(2):  # warm-up: compilation, the pipeline's first batches
            self.state, metrics = self.step(self.state, next_batch())
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            self.state, metrics = self.step(self.state, next_batch())
        jax.block_until_ready(metrics)
        return steps * self.batch / (time.perf_counter() - start)

    def pipeline_fed(self, source: Any, workers: int, sizes: dict[str, Any]) -> float:
        """Images/s with batches from the real grain pipeline over `source`."""
        from icnet_jax import cli
        from icnet_jax.data import pipeline
        from icnet_jax.data.input_spec import InputSpec
        from icnet_jax.train import trainer

        cli.flags_at_defaults()  # argparse here, not absl: grain's workers read absl's flags
        iterator = pipeline.train_dataset(
            source,
            InputSpec.from_config(self.config),
            global_batch_size=self.batch,
            process_index=0,
            process_count=1,
            seed=0,
            worker_count=workers,
        )
        try:
            return self.images_per_s(
                sizes["pipeline_steps"], lambda: trainer.shard(next(iterator), 1)
            )
        finally:
            iterator.close()
