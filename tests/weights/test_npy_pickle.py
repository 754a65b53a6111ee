"""`.npy` weights read without running code: the restricted unpickler."""

import collections
import os
import pathlib
import pickle

import chex
import numpy as np
import pytest

from icnet_jax import errors
from icnet_jax.weights import files, npy_pickle


class _Payload:
    """Pickles as a call of `function(*args)`: what a crafted weights file does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def save_object(path: pathlib.Path, value) -> pathlib.Path:
    """`np.save` of `value` as the ports save their weights: a 0-d object array."""
    array = np.empty((), object)
    array[()] = value
    np.save(path, array, allow_pickle=True)
    return path


@pytest.mark.parametrize(
    "make_payload, refused",
    [
        (lambda marker: _Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        (lambda marker: _Payload(open, str(marker), "w"), "io.open"),
    ],
    ids=["os.system", "open"],
)
def test_a_crafted_npy_is_refused_before_it_runs_anything(tmp_path, make_payload, refused):
    marker = tmp_path / "written_by_the_pickle"
    evil = save_object(tmp_path / "evil.npy", {"conv1": {"weights": make_payload(marker)}})

    with pytest.raises(files.WeightsError) as error:
        files.load_release(evil)
    assert not marker.exists()
    assert str(error.value) == (
        f"{evil}: refused to unpickle {refused}: a weights .npy holds only arrays and "
        "containers of them, and this file would run code when loaded"
    )
    assert isinstance(error.value, errors.UserError)
    with pytest.raises(errors.UserError, match=f"refused to unpickle {refused}"):
        files.read_weights(evil)  # the ImageNet trunk path (config.init_backbone)
    assert not marker.exists()

    np.load(evil, allow_pickle=True)  # the premise: numpy's own loader does run it
    assert marker.exists()


def test_the_ports_layouts_load_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    nested = {
        "conv1_sub1": {
            "weights": rng.normal(size=(3, 3, 3, 32)).astype(np.float32),
            "biases": rng.normal(size=(32,)).astype(np.float64),
        },
        "conv1_sub1_bn": collections.OrderedDict(
            mean=rng.normal(size=(32,)).astype(np.float16), count=np.int64(7)
        ),
        "fortran": {"w": np.asfortranarray(rng.normal(size=(4, 5)).astype(np.float32))},
    }
    read = files.load_release(save_object(tmp_path / "nested.npy", nested))
    expected = {
        "conv1_sub1/weights": nested["conv1_sub1"]["weights"],
        "conv1_sub1/biases": nested["conv1_sub1"]["biases"],
        "conv1_sub1_bn/mean": nested["conv1_sub1_bn"]["mean"],
        "conv1_sub1_bn/count": np.asarray(7, np.int64),
        "fortran/w": nested["fortran"]["w"],
    }
    chex.assert_trees_all_equal(read, expected)
    chex.assert_trees_all_equal_dtypes(read, expected)

    plain = {"a": [1, 2.5, "s", None, True, (3,)], "b": b"raw"}
    loaded = npy_pickle.load_npy(save_object(tmp_path / "plain.npy", plain)).item()
    assert loaded == plain


def test_numpy1_protocol2_pickles_load(tmp_path):
    """Protocol-2 pickles naming `numpy.core` (NumPy 1, the releases' Python 2 era); Python 3
    writes their bytes as `_codecs.encode`."""
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    array = np.empty((), object)
    array[()] = {"conv": {"weights": weights, "name": b"conv"}}
    stream = pickle.dumps(array, protocol=2)  # GLOBAL opcodes: "module\nname\n" as text
    assert b"numpy._core.multiarray\n" in stream and b"_codecs\nencode\n" in stream
    stream = stream.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path = tmp_path / "old.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|O", "fortran_order": False, "shape": ()}
        )
        file.write(stream)
    loaded = npy_pickle.load_npy(path).item()
    np.testing.assert_array_equal(loaded["conv"]["weights"], weights)
    assert loaded["conv"]["name"] == b"conv"


def test_numeric_arrays_are_read_without_pickle(tmp_path):
    values = np.arange(12, dtype=np.int16).reshape(3, 4)
    np.save(tmp_path / "a.npy", values)
    chex.assert_trees_all_equal(npy_pickle.load_npy(tmp_path / "a.npy"), values)
