"""Every config and named variant resolves, and builds its model."""

import functools
import importlib
import json

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from icnet_jax import default
from icnet_jax.train import trainer

CONFIGS = ["cityscapes", "camvid", "coco_stuff", "custom", "quickstart"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_resolves(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.num_steps > 0 and len(config.input.crop_size) == 2
    model = trainer.create_model(config, num_classes=5)
    out = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))
    assert "params" in out


@pytest.mark.parametrize("variant", sorted({**default.ABLATIONS, **default.RECIPES}))
def test_variants(variant):
    config = importlib.import_module("configs.cityscapes").get_config(variant)
    model = trainer.create_model(config, num_classes=19)
    images = jnp.zeros((1, 65, 65, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
    logits, _ = jax.eval_shape(
        lambda v: model.apply(v, images, train=True, mutable=["batch_stats"]), variables
    )
    assert set(config.loss_weights) <= set(logits)


@pytest.mark.parametrize("name", CONFIGS)
def test_training_crop_keeps_the_release_geometry(name):
    """Each branch's map is an exact x2 zoom of the one below it, and the crop an exact x4 zoom of
    sub124 (so labels shrink exactly): what 32k+1 sizes give (ICNet's three stride-2 stages on
    the full image, four on the half image and a x2 shrink; align-corners zoom: 2n - 1)."""
    config = importlib.import_module(f"configs.{name}").get_config()
    model = trainer.create_model(config, num_classes=5)
    images = jnp.zeros((1, *config.input.crop_size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
    logits, _ = jax.eval_shape(
        lambda v: model.apply(v, images, train=True, mutable=["batch_stats"]), variables
    )
    sub4, sub24, sub124 = (logits[k].shape[1:3] for k in ("sub4", "sub24", "sub124"))
    for crop, low, medium, high in zip(config.input.crop_size, sub4, sub24, sub124, strict=True):
        assert (medium, high, crop) == (2 * low - 1, 2 * medium - 1, 4 * high - 3), name


def test_a_size_off_the_geometry_is_caught():
    # CamVid's former 361 rows: the high branch's 1/8 map has 46 rows, sub24's zoom 45.
    model = trainer.create_model(importlib.import_module("configs.camvid").get_config(), 11)
    images = jnp.zeros((1, 361, 481, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
    logits, _ = jax.eval_shape(
        lambda v: model.apply(v, images, train=True, mutable=["batch_stats"]), variables
    )
    assert logits["sub24"].shape[1] == 45 and logits["sub124"].shape[1] == 91 != 2 * 45 - 1


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        importlib.import_module("configs.cityscapes").get_config("nope")


def test_camvid_cpu_recipe():
    config = importlib.import_module("configs.camvid").get_config("cpu")
    assert config.dataset.name == "camvid" and config.loss.ohem
    assert config.batch_size * config.num_steps <= 12_000  # the recipe's image budget: 12k crops
    assert all((s - 1) % 8 == 0 for s in config.input.crop_size)


def test_variants_join_with_a_plus_left_to_right():
    config = importlib.import_module("configs.camvid").get_config("cpu+compress_full")
    assert config.batch_size == 8 and tuple(config.input.crop_size) == (225, 321)
    assert config.model.width == 1.0 and config.model.stem == "resnet"
    assert not config.input.bgr and tuple(config.input.std) == default.TORCH_STD
    half = importlib.import_module("configs.cityscapes").get_config("trainval90k+compress_half")
    assert half.num_steps == 90_000 and half.model.width == 0.5 and half.model.stride_on == "3x3"
    with pytest.raises(
        ValueError, match="unknown variant 'nope'; ablations: .*recipes: .*trainval90k"
    ):
        importlib.import_module("configs.cityscapes").get_config("trainval90k+nope")


def test_unknown_variant_lists_ablations_and_recipes_apart():
    with pytest.raises(ValueError) as raised:
        importlib.import_module("configs.camvid").get_config("nope")
    message = str(raised.value)
    assert "\n" not in message
    ablations, recipes = message.split("; ablations: ")[1].split("; recipes: ")
    assert ablations.split(", ") == sorted(default.ABLATIONS)
    assert recipes.split(", ") == sorted(["compress_full", "compress_half", "cpu"])
    assert not set(default.ABLATIONS) & set(default.RECIPES)


def test_joined_variants_that_disagree_are_one_error_naming_both_and_the_key():
    cityscapes = importlib.import_module("configs.cityscapes")
    with pytest.raises(ValueError) as raised:
        cityscapes.get_config("width025+compress_half")
    message = str(raised.value)
    assert "\n" not in message
    assert "'width025' and 'compress_half'" in message and "model.width" in message
    with pytest.raises(ValueError, match="'no_clg' and 'pspnet50' both set loss_weights"):
        cityscapes.get_config("sub4+no_clg+pspnet50")
    # Variants that agree on a key join: both set the width to 0.5 (and the PSPNet trunk).
    config = cityscapes.get_config("pspnet50_half+compress_half")
    assert config.model.name == "pspnet" and config.model.width == 0.5
    assert config.model.stem == "resnet"


# --- Every field can be set from the command line ------------------------------------------------


def _variants(module) -> list[str | None]:
    """None, every ablation and recipe, and the config file's own recipes (which the error for an
    unknown variant lists)."""
    with pytest.raises(ValueError) as raised:
        module.get_config("?")
    own = str(raised.value).split("; recipes: ")[1].split(", ")
    return [None, *sorted({*default.ABLATIONS, *default.RECIPES, *own})]


def _leaves(config, prefix=""):
    """(dotted key, declared type, value) of every leaf of `config`."""
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", config.get_type(key), value


ALL_CONFIGS = [
    (name, variant)
    for name in CONFIGS
    for variant in _variants(importlib.import_module(f"configs.{name}"))
]


@pytest.mark.parametrize(("name", "variant"), ALL_CONFIGS)
def test_no_field_is_a_bare_none(name, variant):
    """A field holding a bare None has no type, and ml_collections refuses to set it from the
    command line ("Type <class 'NoneType'> ... is not supported for overriding"): such fields
    are typed placeholders (`config_dict.placeholder(tuple)`), which read None."""
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    for key, declared, _ in _leaves(config):
        assert declared is not type(None), f"configs/{name}.py:{variant} {key}"


# A command-line value and what it parses to, per placeholder type.
VALUES = {tuple: ("(65,129)", (65, 129)), int: ("3", 3), float: ("0.5", 0.5), str: ("x", "x")}
PLACEHOLDERS = sorted(
    {
        (name, key, declared)
        for name, variant in ALL_CONFIGS
        for key, declared, value in _leaves(
            importlib.import_module(f"configs.{name}").get_config(variant)
        )
        if value is None
    },
    key=str,
)


def test_placeholders_are_found():
    # input.eval_size is one (None: native resolution) wherever the config does not set it.
    assert ("camvid", "input.eval_size", tuple) in PLACEHOLDERS


@pytest.mark.parametrize(("name", "key", "declared"), PLACEHOLDERS)
def test_each_placeholder_is_set_from_the_command_line(name, key, declared):
    text, expected = VALUES[declared]
    argv = ["prog", f"--config=configs/{name}.py", f"--config.{key}={text}"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
    values(argv)
    node, *path = values.config, *key.split(".")
    for part in path:
        node = node[part]
    assert node == expected
    unset = importlib.import_module(f"configs.{name}").get_config()
    assert functools.reduce(lambda n, p: n[p], key.split("."), unset) is None


def test_a_placeholder_round_trips_through_the_json_saved_with_checkpoints():
    for variant in (None, "cpu"):
        config = importlib.import_module("configs.camvid").get_config(variant)
        saved = json.loads(config.to_json())
        assert saved["input"]["eval_size"] is None
        restored = ml_collections.ConfigDict(saved)
        assert restored.input.eval_size is None and json.loads(restored.to_json()) == saved
        config.input.eval_size = saved["input"]["eval_size"] or [65, 129]  # JSON gives lists
        assert config.input.eval_size == (65, 129)
