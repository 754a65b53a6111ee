"""grain input pipelines: an endless, shuffled, augmented training stream of global batches, each
split over the hosts, and a fixed-order evaluation stream, over any random-access source of
segmentation examples.

A source is anything with `len(src)` and `src[i]` returning
`{'image': uint8 [H, W, 3] RGB, 'label': uint8 [H, W, 1] (255 = ignore), 'file_name': str | bytes}`,
such as a tfds `as_data_source` split or a list. With `worker_count > 0` it must be picklable
(grain starts its workers with `spawn`).
"""

import functools
import time
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import numpy as np
from grain.sources import RandomAccessDataSource

from icnet_jax.data.augment import file_name_of, normalize, train_transform, validate_example
from icnet_jax.data.input_spec import InputSpec

# Tags that split one user seed into independent streams for the shuffle and the augmentation.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def _derived_seed(seed: int, stream: int) -> int:
    """A seed in [0, 2**32) for `stream`, well mixed from `seed` (nearby seeds stay unrelated)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"need 0 <= process_index < process_count, got {process_index} and {process_count}"
        )


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """Examples per host and step: `global_batch_size // process_count`, which must be exact."""
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a positive multiple of "
            f"process_count {process_count}"
        )
    return global_batch_size // process_count


class _GlobalStreamExample:
    """Maps a host's local stream position to its augmented example of the global stream.

    The global stream is epoch after epoch of `steps_per_epoch * B` examples: epoch e is
    `epoch_permutation(e)` truncated to whole global batches. Host `p` of `P` owns positions
    `p * B_local ... (p + 1) * B_local - 1` of every global batch of `B = P * B_local` positions,
    so its local position `i` is the global position
    `g = (i // B_local) * B + p * B_local + i % B_local`. The augmentation generator is seeded
    by `(seed, g)` alone, so an example looks the same whatever `P`, the host or the worker count.
    Picklable (grain workers); the permutation cache is per process.
    """

    def __init__(
        self,
        source: RandomAccessDataSource,
        transform,
        *,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        seed: int,
    ):
        self.source = source
        self.transform = transform
        self.global_batch = global_batch_size
        self.local_batch = global_batch_size // process_count
        self.offset = process_index * self.local_batch
        self.epoch_len = (len(source) // global_batch_size) * global_batch_size
        self.shuffle_seed = _derived_seed(seed, _SHUFFLE_STREAM)
        self.augment_seed = _derived_seed(seed, _AUGMENT_STREAM)
        self._permutations: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_permutations": {}}

    def global_position(self, local_position: int) -> int:
        step, within = divmod(local_position, self.local_batch)
        return step * self.global_batch + self.offset + within

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """The source indices of epoch `epoch`, in order (`epoch_len` of them, no repeats)."""
        perm = self._permutations.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.shuffle_seed, epoch])
            perm = rng.permutation(len(self.source))[: self.epoch_len]
            # Workers and read threads move forward together: the last two epochs suffice.
            self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
            self._permutations[epoch] = perm
        return perm

    def __call__(self, local_position: int, _: Any) -> dict[str, np.ndarray]:
        g = self.global_position(local_position)
        epoch, position = divmod(g, self.epoch_len)
        example = self.source[int(self.epoch_permutation(epoch)[position])]
        rng = np.random.Generator(np.random.Philox(key=[self.augment_seed, g]))
        return self.transform(example, rng)


def train_dataset(
    source: RandomAccessDataSource,
    spec: InputSpec,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    seed: int,
    worker_count: int = 0,
    read_threads: int = 1,
) -> grain.DatasetIterator:
    """Endless iterator of this host's part of the global training batches.

    The global stream does not depend on the number of hosts: epoch `e` visits the source in
    an order derived from `seed` and `e` (the same on every host) and drops the last incomplete
    global batch, so every epoch has `len(source) // global_batch_size` steps, and global batch
    `k` of an epoch is examples `perm[k * B : (k + 1) * B]`. Host `p` of `P` reads (decodes,
    augments) only its slice `[p * B_local : (p + 1) * B_local]` of each global batch, so the
    hosts' batches of one step, concatenated in host order, are the one-host batch of that step.
    Each example's augmentation is drawn from a generator seeded by `seed` and the example's
    position in the global stream alone, so the batches depend on none of the host count,
    `worker_count` or `read_threads`.

    Args:
      source: random-access examples (see the module docstring).
      spec: the augmentation and normalisation (`augment.train_transform`).
      global_batch_size: examples per step over all hosts.
      process_index, process_count: this host and the number of hosts (`jax.process_index()`,
        `jax.process_count()`).
      seed: any non-negative int; the same seed gives the same batches.
      worker_count: grain worker processes (0: work in this process).
      read_threads: threads per process, each building whole batches ahead of time; each
        holds one batch in flight, so memory grows with it.

    Returns:
      A grain iterator of `{'image': float32 [B_local, h, w, 3], 'label': int32 [B_local, h, w]}`
      with `B_local = global_batch_size // process_count`. `get_state()` gives a small dict;
      `set_state(state)` on a fresh iterator made with the same arguments continues with exactly
      the batch that would have come next. The state's form depends on `worker_count` (grain
      raises KeyError on a state saved with 0 workers restored with 2, or the reverse), so keep
      it fixed across a resume. Call `close()` when done if `worker_count > 0`.
    """
    _check_process(process_index, process_count)
    batch = local_batch_size(global_batch_size, process_count)
    if worker_count < 0 or read_threads < 0:
        raise ValueError(
            f"need worker_count, read_threads >= 0, got {worker_count}, {read_threads}"
        )
    steps_per_epoch = len(source) // global_batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(source)} examples give fewer than one global batch of {global_batch_size}"
        )
    transform = functools.partial(train_transform, spec=spec)
    example_at = _GlobalStreamExample(
        source,
        transform,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        seed=seed,
    )
    # This host's local stream positions 0, 1, 2, ... (endless); `repeat` hands the unwrapped
    # position to `map_with_index`, which maps it to the global stream.
    ds = grain.MapDataset.range(steps_per_epoch * batch).repeat().map_with_index(example_at)
    ds = ds.batch(batch, drop_remainder=True)
    return _iterate(ds, worker_count=worker_count, read_threads=read_threads)


def _iterate(ds: grain.MapDataset, *, worker_count: int, read_threads: int):
    """An iterator over `ds` read by `read_threads` threads in each of `worker_count` worker
    processes (0: this process)."""
    # grain's default read options (16 threads, 500 elements ahead) would hold hundreds of
    # full-size batches in memory.
    read_options = grain.ReadOptions(
        num_threads=read_threads, prefetch_buffer_size=max(1, read_threads)
    )
    iter_ds = ds.to_iter_dataset(read_options)
    if worker_count > 0:
        # grain reads its absl flags here: parsed by the command line (`cli.run`), else see
        # `cli.flags_at_defaults`.
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(iter_ds)


def eval_transform(example: Mapping[str, Any], spec: InputSpec) -> dict[str, Any]:
    """One evaluation example at native resolution, no augmentation, normalised as `spec` says.

    Returns:
      `{'image': float32 [H, W, 3] (see `augment.normalize`), 'label': int32 [H, W],
      'file_name': str}`.
    """
    image, label = validate_example(example)
    return {
        "image": normalize(image, spec.mean, spec.std, spec.bgr),
        "label": label.astype(np.int32),
        "file_name": file_name_of(example),
    }


def eval_dataset(
    source: RandomAccessDataSource, spec: InputSpec, *, process_index: int, process_count: int
) -> grain.IterDataset:
    """This host's evaluation examples, unbatched, in source order.

    Host `p` of `P` gets source indices `p, p + P, ...`: disjoint shards that together cover the
    whole source; their sizes differ by at most one (`num_eval_examples`), so multi-host
    evaluation must let hosts finish at different counts or pad.

    Returns:
      A re-iterable grain dataset of `eval_transform` outputs (one example prepared ahead).
    """
    _check_process(process_index, process_count)
    transform = functools.partial(eval_transform, spec=spec)
    ds = grain.MapDataset.source(source)[process_index::process_count].map(transform)
    # Full-resolution float32 examples are large: read one ahead, not grain's default 500.
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))


def num_eval_examples(
    source: RandomAccessDataSource, *, process_index: int, process_count: int
) -> int:
    """How many examples `eval_dataset` gives host `process_index` of `process_count`."""
    _check_process(process_index, process_count)
    return len(range(process_index, len(source), process_count))


def measure_throughput(iterator: Iterator[Mapping[str, np.ndarray]], num_batches: int) -> float:
    """Images per second over `num_batches` batches, after one untimed warm-up batch.

    The warm-up absorbs worker start-up and first-call costs; `'image'`'s leading axis is the
    batch size.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be positive, got {num_batches}")
    next(iterator)
    images = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        images += next(iterator)["image"].shape[0]
    return images / (time.perf_counter() - start)
