"""Config fields out of their domain: one `error:` line naming each flag, exit status 2, before any
compilation or write; every shipped config and variant passes."""

import importlib
import pathlib

import pytest

from icnet_jax import cli, config_checks, default, errors
from icnet_jax.models import pspnet
from icnet_jax.train import losses
from icnet_jax.weights import prune
from tests import scripts

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = [*default.ABLATIONS, *default.RECIPES]
CONFIG_VARIANTS = {
    "cityscapes": ["trainval90k", *SHARED],
    "camvid": ["cpu", "cpu+compress_full", "cpu+compress_half", *SHARED],
    "coco_stuff": SHARED,
    "custom": SHARED,
    "quickstart": SHARED,
}


@pytest.mark.parametrize("name", sorted(CONFIG_VARIANTS))
def test_every_shipped_config_and_variant_passes(name):
    module = importlib.import_module(f"configs.{name}")
    for variant in [None, *CONFIG_VARIANTS[name]]:
        assert config_checks.problems(module.get_config(variant)) == [], (name, variant)


def test_the_names_match_the_pspnet_and_the_losses():
    assert tuple(sorted(pspnet._STAGE_GEOMETRY)) == config_checks.OUTPUT_STRIDES
    assert config_checks.OHEM_SCOPES == losses.OHEM_SCOPES
    assert config_checks.OHEM_NORMALIZE == losses.OHEM_NORMALIZE


BAD = [
    ("optim.lr", -1.0, "--config.optim.lr=-1: must be > 0"),
    ("optim.lr", 0.0, "--config.optim.lr=0: must be > 0"),
    ("optim.lr", float("nan"), "--config.optim.lr=nan: must be > 0"),
    ("batch_size", 0, "--config.batch_size=0: must be an integer >= 1"),
    ("input.crop_size", (100,), "--config.input.crop_size=100: must be two positive integers"),
    ("input.crop_size", (100, 0), "--config.input.crop_size=100,0: must be two positive"),
    ("input.crop_size", (10.5, 20), "--config.input.crop_size=10.5,20: must be two positive"),
    ("input.eval_size", (1025,), "--config.input.eval_size=1025: must be two positive integers"),
    ("input.scale_range", (2.0, 0.5), "--config.input.scale_range=2,0.5: must be two numbers"),
    ("input.scale_range", (0.0, 1.0), "--config.input.scale_range=0,1: must be two numbers"),
    ("input.std", (1.0, 0.0, 1.0), "--config.input.std=1,0,1: must be three positive numbers"),
    ("optim.weight_decay", -1e-4, "--config.optim.weight_decay=-0.0001: must be >= 0"),
    ("optim.momentum", 1.0, "--config.optim.momentum=1: must be in [0, 1)"),
    ("optim.momentum", -0.1, "--config.optim.momentum=-0.1: must be in [0, 1)"),
    ("optim.power", -1.0, "--config.optim.power=-1: must be >= 0"),
    ("model.bn_momentum", 1.0, "--config.model.bn_momentum=1: must be in [0, 1)"),
    ("model.width", 0.0, "--config.model.width=0: must be in (0, 1]"),
    ("model.width", 1.5, "--config.model.width=1.5: must be in (0, 1]"),
    ("loss_weights", {"sub4": -0.4, "sub124": 1}, "--config.loss_weights.sub4=-0.4: must be >= 0"),
    ("loss.ohem_thresh", 0.0, "--config.loss.ohem_thresh=0: must be in (0, 1]"),
    ("loss.ohem_min_kept", -1, "--config.loss.ohem_min_kept=-1: must be an integer >= 0"),
    ("loss.ohem_scope", "device", "--config.loss.ohem_scope=device: must be one of image, batch"),
    ("loss.ohem_normalize", "all", "--config.loss.ohem_normalize=all: must be one of kept,"),
    ("num_steps", -1, "--config.num_steps=-1: must be an integer >= 0"),
    ("log_every", 0, "--config.log_every=0: must be an integer >= 1"),
    ("checkpoint_every", 0, "--config.checkpoint_every=0: must be an integer >= 1"),
    ("eval_every", -5, "--config.eval_every=-5: must be an integer >= 0"),
    ("keep_checkpoints", 0, "--config.keep_checkpoints=0: must be an integer >= 1"),
    ("loss.class_weights", "0,0,0", "--config.loss.class_weights=0,0,0: use ''"),
    ("loss.class_weights", "1,-1", "--config.loss.class_weights=1,-1: use ''"),
    ("loss.class_weights", "1,inf", "--config.loss.class_weights=1,inf: use ''"),
    ("loss.class_weights", "median", "--config.loss.class_weights=median: use ''"),
    ("model.name", "unet", "--config.model.name=unet: must be one of icnet, pspnet"),
    ("model.branch", "sub2", "--config.model.branch=sub2: must be one of sub4, sub24, sub124"),
    ("model.cff_upsampling", "deconv4", "--config.model.cff_upsampling=deconv4: must be one of"),
    ("model.stem", "vgg", "--config.model.stem=vgg: must be one of release, resnet, deep"),
    ("model.stride_on", "7x7", "--config.model.stride_on=7x7: must be one of 1x1, 3x3"),
    ("model.shortcut", "max", "--config.model.shortcut=max: must be one of conv, avgpool"),
    ("model.dtype", "float8", "--config.model.dtype=float8: must be one of float32, bfloat16"),
    ("model.output_stride", 4, "--config.model.output_stride=4: must be one of 8, 16, 32"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_a_value_out_of_its_domain_is_named_with_its_flag(key, value, message):
    config = default.override(default.get_config(), {key: value})
    with pytest.raises(errors.UserError) as raised:
        config_checks.check(config)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


GOOD = [
    ("input.eval_size", None),
    ("input.eval_size", [1025, 2049]),  # as a saved config.json gives it
    ("loss.class_weights", "1,1,4,1"),
    ("loss.class_weights", " enet"),
    ("loss_weights", {"sub124": 1.0}),
    ("optim.momentum", 0.0),
    ("optim.weight_decay", 0),
    ("model.width", 1),
    ("num_steps", 0),
    ("input.scale_range", (1.0, 1.0)),
]


@pytest.mark.parametrize("key, value", GOOD, ids=[f"{k}={v}" for k, v in GOOD])
def test_values_in_their_domain_pass(key, value):
    assert config_checks.problems(default.override(default.get_config(), {key: value})) == []


def test_every_failure_is_reported_at_once():
    config = default.override(default.get_config(), {"optim.lr": -1.0, "batch_size": 0})
    with pytest.raises(errors.UserError) as raised:
        config_checks.check(config)
    assert str(raised.value) == (
        "--config.batch_size=0: must be an integer >= 1; --config.optim.lr=-1: must be > 0"
    )


def test_fields_a_saved_config_lacks_are_skipped():
    config = default.get_config()
    del config.model["stem"], config.loss["ohem_min_kept"]
    assert config_checks.problems(config) == []


def run(*command, cwd=REPO):
    return scripts.run(*command, cwd=cwd, env={**scripts.ENV, "PYTHONPATH": str(REPO)})


def assert_one_error(done, *words):
    output = done.stdout + done.stderr
    assert done.returncode == cli.EXIT_USAGE, output
    assert "Traceback" not in output, output
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    for word in words:
        assert word in lines[0], lines[0]


ENTRY_CASES = {
    "train lr": (["train.py", "--config.optim.lr=-1"], ["--config.optim.lr=-1: must be > 0"]),
    "train batch 0": (["train.py", "--config.batch_size=0"], ["--config.batch_size=0: must be"]),
    "train crop one int": (
        ["train.py", "--config.input.crop_size=100"],
        ["--config.input.crop_size=100: must be two positive integers"],
    ),
    "train several": (
        ["train.py", "--config.optim.momentum=1", "--config.keep_checkpoints=0"],
        ["--config.keep_checkpoints=0: must be", "; --config.optim.momentum=1: must be in [0, 1)"],
    ),
    "evaluate": (["evaluate.py", "--config.model.width=2"], ["--config.model.width=2: must be"]),
    "predict": (
        ["predict.py", "--config.input.scale_range=(2, 1)", "--checkpoint={new}/c",
         "--input={new}/x.png"],
        ["--config.input.scale_range=2,1: must be"],
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ENTRY_CASES))
def test_an_entry_point_refuses_a_bad_config_before_writing(case, tmp_path):
    new = tmp_path / "new"  # the workdir / output: must still not exist afterwards
    script, *args = ENTRY_CASES[case][0]
    args = [a.format(new=new) for a in args]
    flag = {"train.py": "--workdir", "evaluate.py": "--workdir", "predict.py": "--output"}[script]
    assert_one_error(run(script, f"{flag}={new}", *args), *ENTRY_CASES[case][1])
    assert not new.exists()


def test_prune_refuses_a_keeping_rate_below_its_floor(tmp_path, tiny_checkpoint):
    with pytest.raises(prune.PruneError, match=r"--keep=0.001: .* \[0.05, 1\]"):
        prune.prune_checkpoint(tiny_checkpoint[0], 0.001, tmp_path / "out")
    with pytest.raises(prune.PruneError, match="--keep=nan"):
        prune.check_keep(float("nan"))
    prune.check_keep(prune.MIN_KEEP)
    done = run(
        "-m", "icnet_jax.tools.prune", f"--checkpoint={tiny_checkpoint[0]}", "--keep=0.001",
        f"--output={tmp_path / 'out'}",
    )  # fmt: skip
    assert_one_error(done, "--keep=0.001", "[0.05, 1]")
    assert not (tmp_path / "out").exists()
