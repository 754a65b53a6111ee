"""Export to a TF SavedModel (jax2tf) and ONNX (jax2onnx, run by onnxruntime): dynamic batch,
outputs equal to JAX within 1e-4. Skipped unless the extras of requirements-export.txt are
installed."""

import json
import os
import pathlib

import numpy as np
import pytest

from configs import quickstart
from icnet_jax import errors
from icnet_jax.inference import export
from icnet_jax.tools.export import parse_size
from icnet_jax.weights.release import write_training_checkpoint
from tests import scripts

SIZE = (65, 129)


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
    # Each bilinear resize is one Resize node, not gathers and arithmetic (onnx_resize).
    ops = {node.op_type for node in model.graph.node}
    assert "Resize" in ops and "Gather" not in ops
    # The stem's max pooling pads itself (onnx_pooling): no -inf left in the graph, and no
    # shape recorded for a tensor that the padding had made larger (onnxruntime checks them).
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(model, strict_mode=True))
    constants = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer]
    assert not any(np.isneginf(c).any() for c in constants if c.dtype.kind == "f")


@pytest.mark.parametrize("size", [(9, 17), (8, 16), (3, 4)])
def test_max_pool_padding_becomes_the_pools_own(size, tmp_path):
    """Caffe's ceil-mode pooling exported with its -inf padding folded into MaxPool's pads:
    onnxruntime's values are the numpy reference's, and no Pad node is left."""
    jax2onnx = pytest.importorskip("jax2onnx")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from icnet_jax.inference.onnx_pooling import fold_max_pool_padding
    from icnet_jax.models import pooling

    h, w = size
    model = jax2onnx.to_onnx(pooling.max_pool_ceil, inputs=[("B", h, w, 2)], return_mode="proto")
    assert "Pad" in {n.op_type for n in model.graph.node}
    assert fold_max_pool_padding(model) == 1
    assert "Pad" not in {n.op_type for n in model.graph.node} and not model.graph.initializer
    onnx.save_model(model, str(tmp_path / "pool.onnx"))
    x = np.random.default_rng(0).normal(size=(2, h, w, 2)).astype(np.float32)
    (got,) = export.onnx_session(tmp_path / "pool.onnx").run(None, {model.graph.input[0].name: x})

    def caffe_size(n: int) -> int:  # ceil mode; a last window starting in the padding dropped
        out = int(np.ceil((n + 2 - 3) / 2)) + 1
        return out - 1 if (out - 1) * 2 >= n + 1 else out

    rows, cols = caffe_size(h), caffe_size(w)
    padded = np.pad(x, ((0, 0), (1, 3), (1, 3), (0, 0)), constant_values=-np.inf)
    expected = np.empty((2, rows, cols, 2), np.float32)
    for i in range(rows):
        for j in range(cols):
            expected[:, i, j] = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_nodes_match_numpy(align_corners, tmp_path):
    jax2onnx = pytest.importorskip("jax2onnx")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from icnet_jax.inference.onnx_resize import resize_nodes
    from icnet_jax.models import layers
    from tests import numpy_reference as ref

    x = np.random.default_rng(0).normal(size=(2, 9, 17, 3)).astype(np.float32)
    sizes = [(17, 33), (5, 9), (4, 30), (1, 17), (9, 1)]

    def resizes(images):
        return [layers.resize_bilinear(images, size, align_corners) for size in sizes]

    with resize_nodes():
        model = jax2onnx.to_onnx(resizes, inputs=[("B", 9, 17, 3)], return_mode="proto")
    onnx.save_model(model, str(tmp_path / "r.onnx"))
    outputs = export.onnx_session(tmp_path / "r.onnx").run(None, {model.graph.input[0].name: x})
    for size, got in zip(sizes, outputs):
        np.testing.assert_allclose(got, ref.resize_bilinear(x, size, align_corners), atol=1e-5)


def test_export_speed_benchmark_runs_on_an_export(checkpoint, tmp_path):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    export.export(checkpoint, tmp_path, size=SIZE, formats=("onnx",), check_batches=(1,))
    env = {**scripts.ENV, "PYTHONPATH": str(scripts.REPO)}
    result = scripts.run(
        "benchmarks/export_speed.py",
        f"--checkpoint={checkpoint}",
        f"--onnx={tmp_path / 'icnet.onnx'}",
        "--runs=1",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnxruntime / jax time" in result.stdout
    assert f"input (1, {SIZE[0]}, {SIZE[1]}, 3)" in result.stdout


def test_bad_input_is_refused_before_any_work(tmp_path):
    with pytest.raises(errors.UserError, match="tflite"):
        export.export(tmp_path / "missing", tmp_path, formats=("onnx", "tflite"))
    # Without the extras: the command that installs them; with them: the missing checkpoint.
    with pytest.raises(errors.UserError, match="requirements-export.txt|--checkpoint=.*missing"):
        export.export(tmp_path / "missing", tmp_path, formats=("onnx",))
    assert parse_size("1025,2049") == (1025, 2049)
    for text in ("1025", "a,b", "0,5", "1,2,3"):
        with pytest.raises(errors.UserError, match="--size"):
            parse_size(text)


def test_relative_error_is_scaled_by_the_largest_reference_value():
    assert export.max_relative_error(
        np.array([1.0, 200.0]), np.array([1.0, 200.02])
    ) == pytest.approx(0.02 / 200.02)
    assert export.max_relative_error(np.array([0.5]), np.array([0.0])) == 0.5


CAMVID_VAL = pathlib.Path("/work/shared/data/camvid/val")


def camvid_frames(n: int) -> list[np.ndarray]:
    """The first `n` CamVid val frames (uint8 RGB 360x480); the test skips without them."""
    from icnet_jax.inference import image_io

    files = sorted(CAMVID_VAL.glob("*.png")) + sorted(CAMVID_VAL.glob("*.jpg"))
    if len(files) < n:
        pytest.skip(f"needs {n} CamVid val frames in {CAMVID_VAL}")
    return [image_io.read_image(f) for f in files[:n]]


def segmenters(tiny_checkpoint, backend):
    from icnet_jax.inference import saved_run
    from icnet_jax.inference.predict import Segmenter
    from tests.checkpoint_fakes import checkpoint_config

    workdir, _, _ = tiny_checkpoint
    loaded = saved_run.load_checkpoint(workdir, checkpoint_config())
    return Segmenter(loaded), Segmenter(loaded, backend=backend), workdir


def test_onnxruntime_backend_gives_the_labels_of_jax_on_real_frames(tiny_checkpoint):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    from icnet_jax.inference.onnx_backend import Backend

    frames = camvid_frames(3)
    jax_run, ort_run, workdir = segmenters(tiny_checkpoint, Backend("onnxruntime"))
    agree = total = 0
    for frame in frames:
        ours, reference = ort_run(frame), jax_run(frame)
        assert ours.shape == reference.shape == frame.shape[:2]
        agree += int((ours == reference).sum())
        total += reference.size
    assert agree / total >= 0.999
    # Exported once, cached beside the checkpoint under the size and the checkpoint's key.
    (cached,) = (workdir / "export").glob("icnet_360x480_*.onnx")
    stamp = cached.stat().st_mtime_ns
    _, again, _ = segmenters(tiny_checkpoint, Backend("onnxruntime"))
    again(frames[0])
    assert cached.stat().st_mtime_ns == stamp
    assert not list((workdir / "export").glob(".*"))  # no temporary file left


def test_int8_backend_quantises_every_convolution(tiny_checkpoint, monkeypatch, tmp_path):
    pytest.importorskip("jax2onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from icnet_jax.inference import quantize
    from icnet_jax.inference.onnx_backend import Backend, session_options

    frames = camvid_frames(2)
    calibration = [frame[None].astype(np.float32) for frame in frames]  # mean 0, std 1, RGB
    monkeypatch.setattr(quantize, "dataset_images", lambda config, size, n: iter(calibration[:n]))
    jax_run, int8_run, workdir = segmenters(tiny_checkpoint, Backend("onnxruntime", "int8", 2))
    labels = int8_run(frames[0])
    assert labels.shape == frames[0].shape[:2] and labels.max() < 9
    # Close to float32 (a NaN scale, as -inf padding would give, leaves nothing in common).
    assert np.mean(labels == jax_run(frames[0])) >= 0.9
    (path,) = (workdir / "export").glob(f"icnet_360x480_*_int8_{quantize.RECIPE}_n2.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert {"QLinearConv", "QLinearAdd", "QuantizeLinear", "DequantizeLinear"} <= set(ops)
    # No convolution is left in float32, before or after onnxruntime's optimisations.
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    assert "Conv" not in ops and "QLinearConv" in fused and "Conv" not in fused


def test_backend_combinations_and_missing_extras_are_one_error(monkeypatch):
    import importlib.util

    from icnet_jax.inference.onnx_backend import Backend

    with pytest.raises(errors.UserError, match="--backend=onnxruntime"):
        Backend("jax", "int8").check()
    Backend().check()  # JAX needs nothing more
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "jax2onnx" else real(name)
    )
    with pytest.raises(errors.UserError, match=r"needs jax2onnx.*: pip install -r requirements"):
        Backend("onnxruntime").check()


def test_benchmark_script_times_onnxruntime_in_float32_and_int8(tmp_path):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    result = scripts.run(
        "benchmark.py", "--height=65", "--width=129", "--width_scale=0.125",
        "--runs=2", "--warmup=1", "--noprogress", "--models=icnet_sub124",
        "--backend=onnxruntime", "--dtype=int8", "--calibration_images=2", f"--json={out}",
        env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["config"]["backend"] == "onnxruntime"
    float32, int8 = doc["results"]
    assert (float32["dtype"], int8["dtype"]) == ("float32", "int8")
    assert float32["backend"] == int8["backend"] == "onnxruntime"
    for r in (float32, int8):
        assert r["time_ms"]["median"] > 0 and r["time_ms"]["runs"] == 2
    assert int8["speedup_vs_float32"] == pytest.approx(
        float32["time_ms"]["median"] / int8["time_ms"]["median"]
    )
    assert "speedup_vs_float32" not in float32


def test_int8_calibrates_on_the_dataset_the_checkpoint_was_trained_on():
    import types

    from icnet_jax import default
    from icnet_jax.inference.quantize import calibration_config

    command_line = default.get_config()  # quickstart-like: another dataset than the checkpoint's
    command_line.dataset.name = "street"
    command_line.dataset.manual_dir = "/given/on/the/command/line"
    saved = {"dataset": {"name": "camvid", "manual_dir": "/at/training", "data_dir": "/prepared"}}
    config = calibration_config(types.SimpleNamespace(config=command_line, saved_config=saved))
    assert config.dataset.name == "camvid"
    assert config.dataset.data_dir == "/prepared"  # the command line kept the default
    assert config.dataset.manual_dir == "/given/on/the/command/line"
