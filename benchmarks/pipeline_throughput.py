"""Training-pipeline throughput on synthetic Cityscapes-sized data (1024x2048 RGB, 19 classes).

Prints images/s of `train_dataset` for each worker count, timed after one warm-up batch:

    PYTHONPATH=. python benchmarks/pipeline_throughput.py --crop 1025 --workers 0 2
"""

import argparse

import numpy as np

from icnet_jax.data.pipeline import measure_throughput, train_dataset


def synthetic_cityscapes(num_examples: int, seed: int = 0) -> list[dict]:
    """`num_examples` random `{'image': uint8 [1024, 2048, 3], 'label': uint8 [1024, 2048, 1]}`."""
    rng = np.random.default_rng(seed)
    labels = np.append(np.arange(19), 255).astype(np.uint8)
    return [
        {
            "image": rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8),
            "label": rng.choice(labels, size=(1024, 2048, 1)),
            "file_name": f"synthetic_{i:04d}",
        }
        for i in range(num_examples)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=1025, help="square crop side, pixels")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch")
    parser.add_argument("--num-examples", type=int, default=8, help="synthetic source size")
    parser.add_argument("--num-batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--read-threads", type=int, default=1, help="threads per process")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts")
    args = parser.parse_args()

    source = synthetic_cityscapes(args.num_examples)
    for workers in args.workers:
        iterator = train_dataset(
            source,
            global_batch_size=args.batch_size,
            process_index=0,
            process_count=1,
            crop_size=args.crop,
            scale_range=(0.5, 2.0),
            mirror=True,
            mean=(123.68, 116.779, 103.939),
            std=(1.0, 1.0, 1.0),
            bgr=True,
            ignore_label=255,
            seed=0,
            worker_count=workers,
            read_threads=args.read_threads,
        )
        rate = measure_throughput(iterator, args.num_batches)
        iterator.close()
        print(
            f"workers={workers} read_threads={args.read_threads} crop={args.crop} "
            f"batch={args.batch_size}: {rate:.1f} images/s"
        )


if __name__ == "__main__":
    main()
