"""The evaluator built once (`evaluation/evaluator.py`): its step is traced once however often it
evaluates, in `evaluate.py` and in training's periodic evaluation."""

from __future__ import annotations

import json

import chex
import numpy as np
import pytest

from icnet_jax import build
from icnet_jax.evaluation import loop
from icnet_jax.evaluation.evaluator import Evaluator
from icnet_jax.train import trainer
from tests.checkpoint_fakes import checkpoint_config
from tests.evaluation.test_evaluate import HAND_INFO, OneHotModel, hand_source
from tests.train.test_trainer import tiny_config


@pytest.fixture
def count_traces(monkeypatch):
    """Fails a test whose evaluation step is traced more than once."""
    chex.clear_trace_counter()
    counted = chex.assert_max_traces(loop.predict_labels, 1)
    monkeypatch.setattr(loop, "predict_labels", counted)


def test_two_evaluations_trace_the_step_once(monkeypatch, count_traces):
    monkeypatch.setattr(build, "inference_model", lambda config, n, branch="all": OneHotModel())
    source = hand_source() * 2
    evaluator = Evaluator(checkpoint_config(), 3, "val", source=source, info=HAND_INFO)
    first = evaluator({}, progress=False)
    second = evaluator({}, progress=False)
    assert first["sub124"]["confusion"].sum() == 10  # two images of 5 labelled pixels
    chex.assert_trees_all_equal(first, second)
    assert evaluator.num_images == 2
    assert evaluator.protocol()["protocol"]["flip"] is False


@pytest.mark.slow
def test_training_with_eval_every_compiles_its_evaluation_once(tmp_path, count_traces):
    config = tiny_config(
        tmp_path / "tfds", num_steps=2, eval_every=1, checkpoint_every=2, batch_size=4
    )
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evaluated = [json.loads(line)["step"] for line in lines if "eval/sub124/miou" in line]
    assert evaluated == [1, 2]  # two evaluations, one trace (the fixture)
    metrics = json.loads((tmp_path / "run" / "eval" / "val" / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "street" and metrics["num_images"] == 4
    assert np.isfinite(metrics["branches"]["sub124"]["miou"])
