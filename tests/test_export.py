"""Export to a TF SavedModel (jax2tf) and ONNX (tf2onnx + onnxruntime): dynamic batch, outputs
equal to JAX within 1e-4. Skipped unless the extras of requirements-export.txt are installed."""

import numpy as np
import pytest

from configs import quickstart
from icnet_jax.tools.convert_weights import write_training_checkpoint

SIZE = (65, 129)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    write_training_checkpoint(path, quickstart.get_config(), {}, 19, seed=0)
    return path


def test_saved_model_matches_jax_with_a_dynamic_batch(checkpoint, tmp_path):
    pytest.importorskip("tensorflow")
    from icnet_jax.tools import export

    errors = export.export(
        checkpoint, tmp_path, size=SIZE, formats=("saved_model",), check_batches=(1, 3)
    )
    assert errors["saved_model"] <= 1e-4


def test_onnx_matches_jax_with_a_dynamic_batch(checkpoint, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from icnet_jax.tools import export

    errors = export.export(checkpoint, tmp_path, size=SIZE, formats=("onnx",), check_batches=(1, 2))
    assert errors["onnx"] <= 1e-4
    import onnx

    model = onnx.load(str(tmp_path / "icnet.onnx"))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value")  # symbolic: dynamic batch


def test_relative_error_helper():
    from icnet_jax.tools import export

    assert export.max_relative_error(
        np.array([1.0, 200.0]), np.array([1.0, 200.02])
    ) == pytest.approx(0.02 / 200.02)
