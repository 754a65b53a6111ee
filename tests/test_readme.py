"""The README's "Use a run from Python" blocks, run as written on a real frame: `icnet_jax.load`
gives `predict.py`'s labels, and the plain-orbax block reads the same arrays and classes."""

from __future__ import annotations

import json
import pathlib
import re

import chex
import numpy as np
import pytest
from PIL import Image

from icnet_jax.data import taxonomy
from icnet_jax.weights import checkpoints, spec
from tests import scripts
from tests.checkpoint_fakes import NUM_CLASSES, checkpoint_config, random_state

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_block(name: str) -> str:
    """The ```python block that follows `<!-- readme-python: NAME -->` in README.md."""
    pattern = rf"<!-- readme-python: {name} -->\s*```python\n(.*?)```"
    match = re.search(pattern, README.read_text(), re.S)
    assert match, f"README.md has no block marked readme-python: {name}"
    return match.group(1)


def run_block(name: str, run: pathlib.Path, frame: pathlib.Path) -> dict:
    """Executes a README block with its example paths pointing at `run` and `frame`."""
    code = readme_block(name).replace("runs/quickstart", str(run))
    code = code.replace("photo.png", str(frame))
    namespace: dict = {}
    exec(compile(code, f"README.md[{name}]", "exec"), namespace)  # noqa: S102 - the README's code
    return namespace


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A run as training saves it, with its record of classes and palette."""
    workdir = tmp_path_factory.mktemp("readme_run")
    config = checkpoint_config()
    saved = json.loads(config.to_json())
    saved[spec.RECORD] = spec.classes_record(taxonomy.STREET)
    checkpoints.write(workdir, 7, random_state(config, NUM_CLASSES), saved)
    return workdir


@pytest.mark.slow
def test_the_readme_blocks_give_predict_labels_on_a_real_frame(shared_data, recorded_run, tmp_path):
    frame = sorted((shared_data / "camvid" / "val").glob("*.jpg"))[0]
    done = scripts.run(
        "predict.py", f"--checkpoint={recorded_run}", f"--input={frame}", f"--output={tmp_path}"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = np.asarray(Image.open(tmp_path / f"{frame.stem}_labels.png"))

    loaded = run_block("load", recorded_run, frame)
    model = loaded["model"]
    np.testing.assert_array_equal(loaded["labels"], expected)  # 100% agreement
    assert model.class_names == taxonomy.STREET.class_names

    orbax = run_block("orbax", recorded_run, frame)
    assert "icnet_jax" not in readme_block("orbax")
    assert orbax["class_names"] == list(model.class_names)
    chex.assert_trees_all_equal(
        {k: dict(v) for k, v in orbax["variables"].items()},
        {k: dict(v) for k, v in model.variables.items()},
    )
    # The arrays orbax read, run by the same network, give the same labels.
    model.segmenter.variables = orbax["variables"]
    np.testing.assert_array_equal(
        model.segment(np.asarray(Image.open(frame).convert("RGB"))), expected
    )
