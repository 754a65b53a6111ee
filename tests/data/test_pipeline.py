"""The grain pipelines over a list-backed source whose labels name their example."""

import time

import chex
import grain
import numpy as np
import pytest

from icnet_jax.data import pipeline
from icnet_jax.data.input_spec import InputSpec

NUM_EXAMPLES = 12
CROP = (16, 20)
MEAN = (123.68, 116.779, 103.939)
SPEC = InputSpec(
    crop_size=CROP, scale_range=(0.5, 2.0), mirror=True, mean=MEAN, std=(1.0, 1.0, 1.0), bgr=True
)


def _source(num: int = NUM_EXAMPLES) -> list[dict]:
    """Random images of various sizes; example i's label is i everywhere (so crops reveal i)."""
    rng = np.random.default_rng(0)
    source = []
    for i in range(num):
        h, w = (int(v) for v in rng.integers(24, 48, size=2))
        source.append(
            {
                "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                "label": np.full((h, w, 1), i, np.uint8),
                "file_name": f"img_{i:03d}.png".encode(),
            }
        )
    return source


def _train(source: list[dict], **overrides) -> grain.DatasetIterator:
    kwargs = dict(
        global_batch_size=4,
        process_index=0,
        process_count=1,
        seed=0,
    )
    kwargs.update(overrides)
    return pipeline.train_dataset(source, SPEC, **kwargs)


def _ids(batch: dict) -> list[int]:
    """The example index behind each crop of a batch (the label value that is not padding)."""
    ids = []
    for label in batch["label"]:
        values = set(np.unique(label).tolist()) - {255}
        assert len(values) == 1
        ids.append(values.pop())
    return ids


def _take(iterator, n: int) -> list[dict]:
    return [next(iterator) for _ in range(n)]


def _assert_same(batches_a: list[dict], batches_b: list[dict]) -> None:
    chex.assert_trees_all_equal(batches_a, batches_b)


def test_train_batches_shapes_and_dtypes() -> None:
    batch = next(_train(_source()))
    chex.assert_shape([batch["image"], batch["label"]], [(4, *CROP, 3), (4, *CROP)])
    chex.assert_type([batch["image"], batch["label"]], [np.float32, np.int32])


def test_each_epoch_is_a_new_permutation_that_drops_the_remainder() -> None:
    # 12 examples, batch 5: two batches per epoch, two examples dropped per epoch.
    it = _train(_source(), global_batch_size=5)
    epochs = [sum((_ids(b) for b in _take(it, 2)), []) for _ in range(4)]
    for ids in epochs:
        assert len(set(ids)) == 10  # no repeats within an epoch
    assert len({tuple(ids) for ids in epochs}) == 4  # reshuffled every epoch
    assert set().union(*epochs) == set(range(NUM_EXAMPLES))


def _hosts_concatenated(source: list[dict], num_steps: int, process_count: int, **overrides):
    """Each step's host batches of a `process_count`-host run, concatenated in host order."""
    per_host = []
    for process_index in range(process_count):
        it = _train(source, process_index=process_index, process_count=process_count, **overrides)
        per_host.append(_take(it, num_steps))
    return [
        {k: np.concatenate([h[step][k] for h in per_host]) for k in ("image", "label")}
        for step in range(num_steps)
    ]


@pytest.mark.parametrize("process_count", [2, 4])
def test_hosts_together_give_the_one_host_batches(process_count: int) -> None:
    source = _source()
    # Global batch 4: 3 steps per epoch, so 7 steps cross two epoch boundaries.
    one_host = _take(_train(source), 7)
    _assert_same(_hosts_concatenated(source, 7, process_count), one_host)


def test_hosts_read_only_their_slice_of_each_global_batch() -> None:
    source = _source()
    # 12 examples, global batch 5: two steps and 10 distinct examples per epoch.
    one_host = [_ids(b) for b in _take(_train(source, global_batch_size=5), 4)]
    epoch_ids = []
    for process_index in range(5):
        it = _train(source, global_batch_size=5, process_index=process_index, process_count=5)
        ids = [_ids(b) for b in _take(it, 4)]
        assert all(len(step) == 1 for step in ids)
        assert [step[0] for step in ids] == [step[process_index] for step in one_host]
        epoch_ids.append(ids[0] + ids[1])
    first_epoch = sum(epoch_ids, [])
    assert len(first_epoch) == len(set(first_epoch)) == 10  # the hosts' union: distinct


def test_hosts_resume_exactly() -> None:
    source = _source()
    for process_index in range(2):
        kw = dict(process_index=process_index, process_count=2)
        uninterrupted = _take(_train(source, **kw), 8)
        it = _train(source, **kw)
        _take(it, 4)  # crosses an epoch boundary (3 steps per epoch)
        state = it.get_state()
        restored = _train(source, **kw)
        restored.set_state(state)
        _assert_same(_take(restored, 4), uninterrupted[4:])


def test_bad_batch_or_host_arguments_raise() -> None:
    with pytest.raises(ValueError, match="multiple of process_count"):
        _train(_source(), global_batch_size=5, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        _train(_source(), process_index=2, process_count=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _train(_source(3), global_batch_size=4)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _train(_source(3), global_batch_size=4, process_index=1, process_count=2)


def test_same_seed_same_batches_different_seed_different() -> None:
    source = _source()
    first = _take(_train(source, seed=7), 4)
    _assert_same(first, _take(_train(source, seed=7), 4))
    other = _take(_train(source, seed=8), 4)
    assert not all(
        np.array_equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True)
    )


def test_resume_continues_with_the_next_batch() -> None:
    source = _source()
    uninterrupted = _take(_train(source), 8)
    it = _train(source)
    _take(it, 5)  # crosses an epoch boundary (3 steps per epoch)
    state = it.get_state()
    restored = _train(source)
    restored.set_state(state)
    _assert_same(_take(restored, 3), uninterrupted[5:])


def test_read_threads_give_the_same_batches() -> None:
    source = _source()
    kw = dict(process_index=1, process_count=2)
    _assert_same(_take(_train(source, read_threads=3, **kw), 5), _take(_train(source, **kw), 5))


@pytest.mark.slow
def test_workers_give_the_same_batches_and_resume_exactly() -> None:
    source = _source()
    # Host 1 of 2, so the workers must also keep the host's place in the global stream.
    kw = dict(process_index=1, process_count=2)
    uninterrupted = _take(_train(source, **kw), 7)
    it = _train(source, worker_count=2, **kw)
    try:
        _assert_same(_take(it, 4), uninterrupted[:4])
        state = it.get_state()
    finally:
        it.close()
    restored = _train(source, worker_count=2, **kw)
    try:
        restored.set_state(state)
        _assert_same(_take(restored, 3), uninterrupted[4:])
    finally:
        restored.close()


def test_eval_dataset_strided_shards_in_fixed_order() -> None:
    source = _source(7)
    seen = []
    for process_index in range(2):
        ds = pipeline.eval_dataset(source, SPEC, process_index=process_index, process_count=2)
        examples = list(ds)
        assert len(examples) == pipeline.num_eval_examples(
            source, process_index=process_index, process_count=2
        )
        assert [e["file_name"] for e in list(ds)] == [e["file_name"] for e in examples]
        for example in examples:
            i = int(example["label"][0, 0])
            assert example["file_name"] == f"img_{i:03d}.png"
            h, w = source[i]["image"].shape[:2]
            chex.assert_shape([example["image"], example["label"]], [(h, w, 3), (h, w)])
            chex.assert_type([example["image"], example["label"]], [np.float32, np.int32])
            # BGR: channel 0 is blue minus the blue mean (float32 precision).
            np.testing.assert_allclose(
                example["image"][..., 0], source[i]["image"][..., 2] - MEAN[2], atol=1e-4
            )
        seen.append([int(e["label"][0, 0]) for e in examples])
    assert seen == [[0, 2, 4, 6], [1, 3, 5]]


def test_measure_throughput_counts_images_per_second() -> None:
    def slow_batches():
        while True:
            time.sleep(0.01)
            yield {"image": np.zeros((3, 2, 2, 3), np.float32)}

    rate = pipeline.measure_throughput(slow_batches(), num_batches=5)
    assert 30 < rate <= 300  # 3 images every >= 10 ms
