"""The entry points' answers to user mistakes: one `error:` line, exit status 2, no traceback and
nothing written, decided before any compilation."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from icnet_jax import cli
from tests import scripts

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_DATA = [
    "--config.dataset.builder_kwargs.num_train=4",
    "--config.dataset.builder_kwargs.num_val=2",
    "--config.dataset.builder_kwargs.height=32",
    "--config.dataset.builder_kwargs.width=64",
]


def run(script, *args):
    return scripts.run(script, *args)


@pytest.fixture
def paths(tmp_path, tiny_checkpoint):
    file = tmp_path / "a_file"
    file.write_text("")
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    return {
        "new": tmp_path / "new",  # must still not exist afterwards
        "file": file,
        "image": image,
        "checkpoint": tiny_checkpoint[0],
        "data": tmp_path / "tfds",
    }


CASES = {
    "batch not divisible by the devices": (
        "train.py", ["--workdir={new}", "--config.batch_size=3"], ["batch_size=3", "4 devices"]
    ),
    "unknown variant": (
        "train.py", ["--workdir={new}", "--config=configs/camvid.py:cpu+nope"],
        ["unknown variant 'nope'", "compress_full"],
    ),
    "variants that disagree": (
        "train.py", ["--workdir={new}", "--config=configs/cityscapes.py:width025+compress_half"],
        ["'width025' and 'compress_half'", "model.width"],
    ),
    "workdir under a file": ("train.py", ["--workdir={file}/run"], ["is a file"]),
    "config typo": ("train.py", ["--workdir={new}", "--config.optim.lrr=1"], ["did you mean 'lr'"]),
    "missing init_checkpoint": (
        "train.py", ["--workdir={new}", "--config.init_checkpoint={new}/x"], ["no checkpoints"]
    ),
    "init_checkpoint of another width": (
        "train.py",
        ["--workdir={new}", "--config.init_checkpoint={checkpoint}", "--config.model.width=0.5",
         "--config.dataset.data_dir={data}", *TINY_DATA],
        ["init_checkpoint", "width 0.5"],
    ),
    "class weights of another length": (
        "train.py",
        ["--workdir={new}", "--config.loss.class_weights=1,2", "--config.dataset.data_dir={data}",
         *TINY_DATA],
        ["2 weights for 9 classes"],
    ),
    "evaluate without checkpoints": ("evaluate.py", ["--workdir={new}"], ["no checkpoints"]),
    "evaluate into a file": (
        "evaluate.py", ["--checkpoint={checkpoint}", "--workdir={file}/x"], ["is a file"]
    ),
    "predict a missing input": (
        "predict.py",
        ["--checkpoint={checkpoint}", "--input={new}/x.png", "--output={new}"],
        ["does not exist"],
    ),
    "predict without a checkpoint": (
        "predict.py",
        ["--checkpoint={new}", "--input={image}", "--output={new}"],
        ["no checkpoints"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_mistake_is_one_line_exit_2_and_nothing_written(case, paths):
    script, args, words = CASES[case]
    done = run(script, *(a.format(**paths) for a in args))
    output = done.stdout + done.stderr
    assert done.returncode == cli.EXIT_USAGE, output
    assert "Traceback" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], errors[0]
    assert not paths["new"].exists()
