"""The PyTorch ICNet that `benchmarks/train_step_speed.py` times against ours is the same
network: with our weights it gives our logits and our cascade loss (PyTorch as the reference)."""

import jax
import numpy as np
import pytest

from icnet_jax.models import ICNet
from icnet_jax.train.losses import cascade_loss

torch = pytest.importorskip("torch")
torch_icnet = pytest.importorskip("benchmarks.torch_icnet")

SIZE = (65, 97)
WEIGHTS = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}


@pytest.fixture(scope="module")
def networks():
    model = ICNet(num_classes=5, width=0.25)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, *SIZE, 3), np.float32))
    rng = np.random.default_rng(0)
    # Statistics and offsets away from their initial values, so that each one is checked.
    variables = jax.tree.map(
        lambda a: (
            np.asarray(a) + rng.uniform(0.1, 0.5, np.shape(a)).astype(np.float32)
            if np.ndim(a) == 1
            else np.asarray(a)
        ),
        variables,
    )
    torch_model = torch_icnet.load_flax(torch_icnet.ICNet(5, 0.25), variables)
    images = rng.normal(size=(2, *SIZE, 3)).astype(np.float32)
    return model, variables, torch_model, images


def nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def test_inference_logits_equal(networks):
    model, variables, torch_model, images = networks
    expected = np.asarray(model.apply(variables, images))
    with torch.no_grad():
        got = torch_model.eval()(nchw(images)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


def test_training_logits_and_cascade_loss_equal(networks):
    model, variables, torch_model, images = networks
    labels = np.random.default_rng(1).integers(0, 6, size=(2, *SIZE)).astype(np.int32)
    labels[labels == 5] = 255
    logits, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
    expected, _ = cascade_loss(logits, labels, WEIGHTS, ignore_label=255)
    got_logits = torch_model.train()(nchw(images))
    branch_labels = {
        k: torch.from_numpy(torch_icnet.nearest_labels(labels, v.shape[2:]).astype(np.int64))
        for k, v in got_logits.items()
    }
    got = torch_icnet.cascade_loss(got_logits, branch_labels, WEIGHTS, 255)
    for name, value in logits.items():
        ours = np.asarray(value)
        theirs = got_logits[name].detach().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(theirs, ours, atol=1e-4 * np.abs(ours).max())
    np.testing.assert_allclose(float(got.detach()), float(expected), rtol=1e-5)
