"""Export to a TF SavedModel (jax2tf) and ONNX (jax2onnx, run by onnxruntime): dynamic batch,
outputs equal to JAX within 1e-4. Skipped unless the extras of requirements-export.txt are
installed."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import quickstart
from icnet_jax import errors
from icnet_jax.tools import export
from icnet_jax.weights.release import write_training_checkpoint

SIZE = (65, 129)
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    write_training_checkpoint(path, quickstart.get_config(), {}, 19, seed=0)
    return path


def test_saved_model_matches_jax_with_a_dynamic_batch(checkpoint, tmp_path):
    tf = pytest.importorskip("tensorflow")
    errors = export.export(
        checkpoint, tmp_path, size=SIZE, formats=("saved_model",), check_batches=(1, 3)
    )
    assert errors["saved_model"] <= 1e-4
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, *SIZE, 3]
    # Lowered for every serving platform, not only for this machine's CPU.
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "saved_model" / "saved_model.pb").read_bytes())
    platforms = {
        tuple(node.attr["platforms"].list.s)
        for function in saved.meta_graphs[0].graph_def.library.function
        for node in function.node_def
        if node.op == "XlaCallModule"
    }
    assert platforms == {(b"CPU", b"CUDA", b"TPU")}


def test_onnx_matches_jax_with_a_dynamic_batch(checkpoint, tmp_path):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    errors = export.export(checkpoint, tmp_path, size=SIZE, formats=("onnx",), check_batches=(1, 2))
    assert errors["onnx"] <= 1e-4
    model = onnx.load(str(tmp_path / "icnet.onnx"))
    (images,) = model.graph.input
    dims = images.type.tensor_type.shape.dim
    assert images.name == "images"
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # symbolic: dynamic batch
    assert [d.dim_value for d in dims[1:]] == [*SIZE, 3]
    assert model.graph.output[0].name == "logits"


def test_export_speed_benchmark_runs_on_an_export(checkpoint, tmp_path):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    export.export(checkpoint, tmp_path, size=SIZE, formats=("onnx",), check_batches=(1,))
    command = [
        sys.executable,
        "benchmarks/export_speed.py",
        f"--checkpoint={checkpoint}",
        f"--onnx={tmp_path / 'icnet.onnx'}",
        "--runs=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnxruntime / jax time" in result.stdout
    assert f"input (1, {SIZE[0]}, {SIZE[1]}, 3)" in result.stdout


def test_bad_input_is_refused_before_any_work(tmp_path):
    with pytest.raises(errors.UserError, match="tflite"):
        export.export(tmp_path / "missing", tmp_path, formats=("onnx", "tflite"))
    # Without the extras: the command that installs them; with them: the missing checkpoint.
    with pytest.raises(errors.UserError, match="requirements-export.txt|--checkpoint=.*missing"):
        export.export(tmp_path / "missing", tmp_path, formats=("onnx",))
    assert export.parse_size("1025,2049") == (1025, 2049)
    for text in ("1025", "a,b", "0,5", "1,2,3"):
        with pytest.raises(errors.UserError, match="--size"):
            export.parse_size(text)


def test_relative_error_is_scaled_by_the_largest_reference_value():
    assert export.max_relative_error(
        np.array([1.0, 200.0]), np.array([1.0, 200.02])
    ) == pytest.approx(0.02 / 200.02)
    assert export.max_relative_error(np.array([0.5]), np.array([0.0])) == 0.5
