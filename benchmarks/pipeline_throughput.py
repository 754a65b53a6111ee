"""Training-pipeline throughput on Cityscapes-sized data (1024x2048 RGB), per worker count.

Prints images/s of `train_dataset` (the real grain pipeline: random resize 0.5-2, pad, crop,
mirror, normalise) for each worker count, timed after one warm-up batch:

    PYTHONPATH=. python benchmarks/pipeline_throughput.py --crop=1025 --workers=0,1,2
    PYTHONPATH=. python benchmarks/pipeline_throughput.py --source=street --data_dir=/tmp/tfds
    PYTHONPATH=. python benchmarks/pipeline_throughput.py --source=street --data_dir=/tmp/tfds \
        --image_format=png,raw --cpu_cost --rounds=3 --json=cost.json
    PYTHONPATH=. python benchmarks/pipeline_throughput.py --workers=0 --profile=prof.out

Sources: `arrays` (default) holds decoded random images in memory, so it times the augmentation
alone; `street` is the quickstart's tfds dataset drawn at 1024x2048 and read from array_record
like Cityscapes (decoding of image and label included), prepared under `--data_dir` on first use
in each `--image_format` (`builders.storage`). `--cpu_cost` does one worker's work for
`--num_batches` batches in this thread (read and decode each example, augment it, stack the
batch) and prints its CPU milliseconds per image by stage and in all (`cpu_ms_per_image`), and
the images/s one worker on a core of its own gives (`images_per_s_per_worker`): figures a loaded
machine does not inflate as it does wall time. With several formats it measures them in turn,
`--rounds` times, and gives each one's medians and its speed relative to the first.
`--profile FILE` also profiles it (cProfile; grain's read threads are invisible to it) and prints
the top functions. `--json FILE` writes the figures, per source (and per worker count)."""

from __future__ import annotations

import cProfile
import dataclasses
import json
import pathlib
import pstats
import time
from typing import Any

import numpy as np

from icnet_jax import cli, default, errors
from icnet_jax.cli import flags
from icnet_jax.data.augment import train_transform
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.data.pipeline import measure_throughput, train_dataset

IMAGE_SIZE = (1024, 2048)


def recipe(crop: int) -> InputSpec:
    """The Cityscapes recipe's input (icnet_jax/default.py) with `crop x crop` crops."""
    return dataclasses.replace(InputSpec.from_config(default.get_config()), crop_size=(crop, crop))


def synthetic_cityscapes(num_examples: int, seed: int = 0) -> list[dict]:
    """`num_examples` random `{'image': uint8 [1024, 2048, 3], 'label': uint8 [1024, 2048, 1]}`."""
    rng = np.random.default_rng(seed)
    labels = np.append(np.arange(19), 255).astype(np.uint8)
    return [
        {
            "image": rng.integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8),
            "label": rng.choice(labels, size=(*IMAGE_SIZE, 1)),
            "file_name": f"synthetic_{i:04d}",
        }
        for i in range(num_examples)
    ]


def street_source(
    num_examples: int, data_dir: str, size: tuple[int, int] = IMAGE_SIZE, image_format: str = "png"
) -> Any:
    """The `street` tfds dataset at `size` (height, width; `num_examples` train images) stored in
    `image_format` (`builders.storage`), prepared on first use under `data_dir`; a random-access
    source whose reads decode what is stored, as Cityscapes' do."""
    from icnet_jax.data import datasets

    source, _ = datasets.get_data_source(
        "street",
        "train",
        data_dir=data_dir,
        num_train=num_examples,
        num_val=1,
        height=size[0],
        width=size[1],
        image_format=image_format,
    )
    return source


def throughput(
    source: Any,
    *,
    workers: int,
    crop: int = 1025,
    batch_size: int = 4,
    num_batches: int = 10,
    read_threads: int = 1,
) -> float:
    """Images/s of the Cityscapes recipe's `train_dataset` over `source` with `workers` worker
    processes (0: in this process), after one warm-up batch."""
    iterator = train_dataset(
        source,
        recipe(crop),
        global_batch_size=batch_size,
        process_index=0,
        process_count=1,
        seed=0,
        worker_count=workers,
        read_threads=read_threads,
    )
    try:
        return measure_throughput(iterator, num_batches)
    finally:
        iterator.close()


def worker_cost(
    source: Any, *, crop: int, batch_size: int, num_batches: int, profile: str | None = None
) -> dict[str, float]:
    """What one worker spends, in CPU milliseconds per image, to read and decode an example, to
    augment it and to stack the batches, done here in this thread for `num_batches` batches.

    CPU time rather than wall time: on a shared machine it is what a worker would cost on a core
    of its own (the pipeline's inter-process copies are left out). `profile`: also write a cProfile
    of the loop to that file.
    """
    rng = np.random.default_rng(0)
    spec = recipe(crop)
    spent = {"read_decode": 0.0, "augment": 0.0, "batch": 0.0}
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    for b in range(num_batches):
        examples = []
        for i in range(batch_size):
            t0 = time.process_time()
            example = source[(b * batch_size + i) % len(source)]
            t1 = time.process_time()
            examples.append(train_transform(example, rng, spec))
            t2 = time.process_time()
            spent["read_decode"] += t1 - t0
            spent["augment"] += t2 - t1
        t0 = time.process_time()
        {k: np.stack([e[k] for e in examples]) for k in examples[0]}
        spent["batch"] += time.process_time() - t0
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    images = num_batches * batch_size
    cost = {f"{k}_cpu_ms": 1e3 * v / images for k, v in spent.items()}
    cost["cpu_ms_per_image"] = 1e3 * sum(spent.values()) / images
    # What one worker process on a core of its own delivers.
    cost["images_per_s_per_worker"] = images / sum(spent.values())
    return cost


def compare_costs(
    sources: dict[str, Any], *, rounds: int, crop: int, batch_size: int, num_batches: int
) -> dict[str, dict[str, float]]:
    """`worker_cost` of each source, measured in turn `rounds` times (a shared machine's load
    then weighs on all alike); per source, each figure's median over the rounds."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    for r in range(rounds):
        for name, source in sources.items():
            cost = worker_cost(source, crop=crop, batch_size=batch_size, num_batches=num_batches)
            runs[name].append(cost)
            print(f"round {r} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in cost.items()))
    return {
        name: {k: float(np.median([c[k] for c in costs])) for k in costs[0]}
        for name, costs in runs.items()
    }


def _report_costs(args: flags.FlagValues, sources: dict[str, Any]) -> dict:
    costs = compare_costs(
        sources,
        rounds=args.rounds,
        crop=args.crop,
        batch_size=args.batch_size,
        num_batches=args.num_batches,
    )
    first = next(iter(costs.values()))
    for name, cost in costs.items():
        ratio = first["cpu_ms_per_image"] / cost["cpu_ms_per_image"]
        print(
            f"{name} crop={args.crop}, one worker, median of {args.rounds}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in cost.items())
            + f"; {ratio:.2f}x the images/s of {next(iter(costs))}"
        )
    return costs


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    unknown = set(args.image_format) - {"png", "raw"}
    if unknown:
        raise errors.UserError(f"--image_format: {sorted(unknown)}; choose among png, raw")

    if args.source == "street":
        sources = {
            f"street-{f}": street_source(args.num_examples, args.data_dir, image_format=f)
            for f in args.image_format
        }
    else:
        sources = {"arrays": synthetic_cityscapes(args.num_examples)}
    figures: dict[str, Any] = {}
    if args.profile:
        name, source = next(iter(sources.items()))
        cost = worker_cost(
            source,
            crop=args.crop,
            batch_size=args.batch_size,
            num_batches=args.num_batches,
            profile=args.profile,
        )
        print(f"{name} crop={args.crop}: " + ", ".join(f"{k} {v:.1f}" for k, v in cost.items()))
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(12)
        figures[name] = cost
    elif args.cpu_cost:
        figures = _report_costs(args, sources)
    else:
        for name, source in sources.items():
            figures[name] = _report_throughput(args, name, source)
    if args.json:
        pathlib.Path(args.json).absolute().parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


def _report_throughput(args: flags.FlagValues, name: str, source: Any) -> dict:
    """Images/s of the real pipeline per worker count, and per worker (0 workers: this process
    does the work, one worker's worth)."""
    out = {}
    for workers in map(int, args.workers):
        rate = throughput(
            source,
            workers=workers,
            crop=args.crop,
            batch_size=args.batch_size,
            num_batches=args.num_batches,
            read_threads=args.read_threads,
        )
        out[str(workers)] = {
            "images_per_s": rate,
            "images_per_s_per_worker": rate / max(1, workers),
        }
        print(
            f"{name} workers={workers} read_threads={args.read_threads} "
            f"crop={args.crop} batch={args.batch_size}: {rate:.1f} images/s",
            flush=True,
        )
    return out


if __name__ == "__main__":
    flags.DEFINE_enum("source", "arrays", ["arrays", "street"], "What the pipeline reads.")
    flags.DEFINE_string("data_dir", "data/tfds", "street: prepared dataset folder.")
    flags.DEFINE_list(
        "image_format",
        ["png"],
        "street: formats (png, raw), compared in turn by --cpu_cost.",
    )
    flags.DEFINE_integer("rounds", 3, "--cpu_cost: rounds per format.")
    flags.DEFINE_integer("crop", 1025, "Square crop side, pixels.")
    flags.DEFINE_integer("batch_size", 4, "Images per batch.")
    flags.DEFINE_integer("num_examples", 8, "Source size.")
    flags.DEFINE_integer("num_batches", 10, "Timed batches per run.")
    flags.DEFINE_integer("read_threads", 1, "Threads per process.")
    flags.DEFINE_list("workers", ["0", "2"], "Worker counts, e.g. 0,1,2.")
    flags.DEFINE_bool("cpu_cost", False, "One worker's CPU ms per image, by stage.")
    cli.define_output("profile", None, "--cpu_cost, and a cProfile into FILE.", kind="file")
    cli.define_output("json", None, "Write the figures to FILE.", kind="file")
    cli.run(main)
