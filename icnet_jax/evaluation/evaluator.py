"""The evaluation of a run's model on one split, built once (`Evaluator`): `evaluate.py` and
training's periodic evaluation hold one and call it with each set of weights, so its jitted step
is traced and compiled once per image size, however often it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from icnet_jax import build
from icnet_jax.data import datasets, pipeline
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.evaluation import loop
from icnet_jax.inference import onnx_backend


class Evaluator:
    """Every branch of a model evaluated on a split (whole images, the config's protocol).

    Attributes:
      model: the Flax module giving every branch (`build.inference_model`), or the `network`
        given (an `onnx_backend.OnnxModel`: its one branch).
      branches: the names of its outputs (`loop.branch_names`).
      step: the jitted `(variables, images, labels) -> (confusions, predictions)` (`make_step`).
      source, info: the split's random-access source and its `DatasetInfo`.
      spec: the input record (normalisation, evaluation size, ignore label).
      split: the split's name; scales, flip: the test-time averaging.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        num_classes: int,
        split: str,
        *,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        source: Any = None,
        info: Any = None,
        network: onnx_backend.OnnxModel | None = None,
    ) -> None:
        """Builds the model and the step, and opens the split (`source`, `info`: an open one
        instead of `config.dataset`'s: tests, notebooks; `network`: what runs instead of the
        Flax module)."""
        if source is None:
            source, info = datasets.config_source(config, split)
        self.source, self.info, self.split = source, info, split
        self.config = config
        self.spec = InputSpec.from_config(config)
        self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)
        self.model = network or build.inference_model(config, num_classes)
        self.branches = loop.branch_names(self.model)
        self.step = loop.make_step(
            self.model,
            num_classes,
            eval_size=self.spec.eval_size,
            align_corners=config.model.align_corners,
            ignore_label=self.spec.ignore_label,
            scales=self.scales,
            flip=self.flip,
        )

    @property
    def num_images(self) -> int:
        """The split's images (all hosts)."""
        return len(self.source)

    def protocol(self) -> dict[str, Any]:
        """What the numbers mean, for metrics.json (beside its step and split): the dataset, the
        number of images and the protocol."""
        d = self.config.dataset
        return {
            "dataset": {
                "name": d.name,
                "builder_kwargs": d.builder_kwargs.to_dict() if d.get("builder_kwargs") else {},
                "manual_dir": d.get("manual_dir") or None,
            },
            "num_images": self.num_images,
            "protocol": {
                "eval_size": list(self.spec.eval_size) if self.spec.eval_size else None,
                "flip": self.flip,
                "scales": list(self.scales),
                "ignore_label": self.spec.ignore_label,
            },
        }

    def run_step(self, variables: Any, images: Any, labels: Any) -> Any:
        """`step`, after an onnxruntime network's sessions of these images' network input
        sizes are made (they cannot be made inside the trace; nothing for a Flax module)."""
        onnx_backend.prepare_for_images(
            self.model, images.shape[1:3], self.scales, self.spec.eval_size,
            self.config.model.align_corners,
        )  # fmt: skip
        return self.step(variables, images, labels)

    def __call__(
        self,
        variables: Any,
        *,
        writers: Sequence[loop.PredictionWriter] = (),
        devices: Sequence[jax.Device] | None = None,
        progress: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """`{branch: metrics}` of `variables` on the split (`loop.evaluate_examples`)."""
        kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
        return loop.evaluate_examples(
            self.run_step,
            variables,
            pipeline.eval_dataset(self.source, self.spec, **kw),
            self.info.class_names,
            self.branches,
            writers=writers,
            devices=devices,
            num_examples=pipeline.num_eval_examples(self.source, **kw),
            progress=progress and jax.process_index() == 0,
        )
