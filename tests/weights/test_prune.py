"""L1-norm filter pruning (paper Sec. 5.2): the pruned model equals the full model whose dropped
channels are forced to zero."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from icnet_jax import cli, errors
from icnet_jax.models import ICNet
from icnet_jax.weights import finetune, prune, trees
from icnet_jax.weights.release import write_training_checkpoint
from tests import scripts


def to_numpy(tree):
    return jax.tree.map(np.asarray, tree)


# The release's trunk, and those of torchvision resnet50 and timm resnet50d (config.model.*).
TRUNKS = {
    "release": {},
    "resnet": {"stem": "resnet", "stride_on": "3x3"},
    "deep": {"stem": "deep", "stride_on": "3x3", "shortcut": "avgpool"},
}


def random_variables(model):
    """`model`'s variables with random BN statistics and parameters."""
    variables = to_numpy(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 3))))
    rng = np.random.default_rng(0)

    def perturb(path, x):
        key = path[-1].key
        if key == "scale":
            return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
        if key in ("bias", "mean"):
            return rng.normal(0, 0.1, x.shape).astype(np.float32)
        if key == "var":
            return rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
        return x

    return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.fixture(scope="module")
def full_variables():
    """Width-1.0 ICNet (the release's trunk) variables with random BN statistics and parameters."""
    return random_variables(ICNet(width=1.0))


@pytest.mark.parametrize("trunk", TRUNKS)
def test_pruned_model_equals_full_model_with_dropped_channels_zeroed(trunk):
    keep, switches, stem = 0.5, TRUNKS[trunk], TRUNKS[trunk].get("stem", "release")
    full_variables = random_variables(ICNet(width=1.0, **switches))
    params = full_variables["params"]
    selected = prune.select_channels(params, keep, stem=stem)
    # Force the dropped filters' BN outputs to zero in the full model (scale 0, bias 0).
    zeroed = jax.tree.map(np.copy, full_variables)
    for path, (_, out) in prune.icnet_channel_graph(stem).items():
        if out == prune.CLASSES:
            continue
        dropped = np.setdiff1d(np.arange(prune._kernel(params, path).shape[-1]), selected[out])
        assert len(dropped) > 0
        bn = trees.node(zeroed["params"], path)["bn"]
        bn["scale"][dropped] = 0.0
        bn["bias"][dropped] = 0.0
    pruned = prune.prune_variables(zeroed, keep, stem=stem)

    small = ICNet(width=0.5, **switches)
    expected = jax.eval_shape(lambda: small.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))
    assert jax.tree.map(lambda s: s.shape, expected) == jax.tree.map(np.shape, pruned)

    x = jnp.asarray(np.random.default_rng(1).normal(0, 50, (1, 65, 129, 3)), jnp.float32)
    reference = np.asarray(jax.jit(ICNet(width=1.0, **switches).apply)(zeroed, x))
    ours = np.asarray(jax.jit(small.apply)(pruned, x))
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(ours, reference, atol=1e-4 * scale, rtol=0)


def test_ranking_by_l1_norm_and_by_group(full_variables):
    params = full_variables["params"]
    selected = prune.select_channels(params, 0.5)
    norms = prune.filter_l1_norms
    k = params["conv1_1_3x3_s2"]["conv"]["kernel"]
    np.testing.assert_array_equal(selected["conv1_1_3x3_s2"], np.sort(np.argsort(-norms(k))[:32]))
    # stage 2: the projection and every increase are summed: ranked by their summed norms
    group = norms(params["conv2_1"]["1x1_proj"]["conv"]["kernel"]) + sum(
        norms(params[f"conv2_{i}"]["1x1_increase"]["conv"]["kernel"]) for i in (1, 2, 3)
    )
    np.testing.assert_array_equal(selected["stage2"], np.sort(np.argsort(-group)[:128]))
    cff1 = norms(params["conv_sub4"]["conv"]["kernel"]) + norms(
        params["conv3_1_sub2_proj"]["conv"]["kernel"]
    )
    np.testing.assert_array_equal(selected["cff1"], np.sort(np.argsort(-cff1)[:128]))
    quarter = prune.prune_variables(full_variables, 0.25)
    chex.assert_shape(
        quarter["params"]["conv5_3"]["1x1_increase"]["conv"]["kernel"], (1, 1, 128, 512)
    )
    chex.assert_shape(quarter["params"]["conv6_cls"]["kernel"], (1, 1, 64, 19))  # classes kept
    chex.assert_shape(quarter["batch_stats"]["conv_sub2"]["bn"]["var"], (64,))


def test_prune_checkpoint_writes_a_narrower_checkpoint(tmp_path):
    config = quickstart.get_config()
    config.model.width = 0.5
    source = write_training_checkpoint(tmp_path / "full", config, {}, 19)
    prune.prune_checkpoint(tmp_path / "full", 0.5, tmp_path / "half")
    state, cfg, num_classes, step = finetune.restore_checkpoint(tmp_path / "half")
    assert cfg["model"]["width"] == 0.25 and num_classes == 19 and step == 0
    expected = prune.prune_variables(
        to_numpy({"params": source.params, "batch_stats": source.batch_stats}), 0.5, width=0.5
    )
    chex.assert_trees_all_equal(to_numpy(state.params), expected["params"])
    jax.tree.map(
        np.testing.assert_array_equal, to_numpy(state.batch_stats), expected["batch_stats"]
    )


def test_bad_input_is_a_user_error_before_any_work(tmp_path):
    with pytest.raises(prune.PruneError, match="--keep=1.5"):
        prune.prune_checkpoint(tmp_path / "absent", 1.5, tmp_path / "out")
    with pytest.raises(errors.UserError, match="--checkpoint=.*absent: no such checkpoint"):
        prune.prune_checkpoint(tmp_path / "absent", 0.5, tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(scripts.REPO)}
    result = scripts.run(
        "-m", "icnet_jax.tools.prune", "--checkpoint=absent", "--output=o", env=env, cwd=tmp_path
    )
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        "error: --checkpoint=absent: no such checkpoint (a workdir, its checkpoints/ folder or a "
        "step)"
    ]
