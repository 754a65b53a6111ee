"""What gives a set of weights its meaning beyond its tensors' shapes: `WeightsSpec`.

Two checkpoints with the same tensor shapes can be different networks (the trunk's stride on
another conv, another resize convention), expect other inputs (BGR or RGB, another mean), or hold
other kinds of statistics (BN-folded placeholders, frozen layers). The spec lists every such
setting once. It travels with the weights as the config saved next to them
(`workdir/checkpoints/<step>/config`); `upgrade` gives a config saved before a setting existed the
release's value of it, and is the only place that does. Every path that reads weights checks the
spec: training resume (`finetune.check_resume`: any difference is refused), a start from a
checkpoint (`finetune.check_fits`: the trunk and input must match), from an ImageNet trunk
(`imagenet.required_settings`), evaluation and prediction (`inference.saved_run`: the saved settings
replace the command line's), pruning and export (the model is the saved spec's), and the weights
converter records it.

Not in the spec, free to change between runs on the same weights: `model.branch` (which output
inference returns; every layer exists whatever it is), `model.dtype` (the computation's precision;
parameters stay float32), `model.bn_momentum`, `input.eval_size` (an evaluation protocol; inference
still takes the saved one by default), the schedule, batch size, losses, logging and evaluation
cadence.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from icnet_jax import build
from icnet_jax.data import taxonomy
from icnet_jax.default import get_config

# Spec field -> the config key a user sets (the name every message uses).
KEYS = {
    "name": "model.name",
    "width": "model.width",
    "cff_upsampling": "model.cff_upsampling",
    "output_stride": "model.output_stride",
    "align_corners": "model.align_corners",
    "stem": "model.stem",
    "stride_on": "model.stride_on",
    "shortcut": "model.shortcut",
    "num_classes": "num_classes",
    "bgr": "input.bgr",
    "mean": "input.mean",
    "std": "input.std",
    "bn_folded": "bn_folded",
    "frozen_bn": "model.freeze_bn_stats",
}
# Settings a new run started from weights (`config.init_checkpoint`) may change: the classifiers
# are re-initialised for another number of classes, fine-tuning may freeze statistics or not, and
# a dilated network may be fine-tuned at another output stride or resize convention.
START_FREE = ("num_classes", "bn_folded", "frozen_bn", "align_corners", "output_stride")
# The saved settings inference takes from the checkpoint by default: the spec's config entries
# that an inference model reads, and the inference protocol recorded with the run.
INFERENCE_KEYS = (
    *(k for k in KEYS.values() if k.startswith(("model.", "input.")) and k != KEYS["frozen_bn"]),
    "model.branch",
    "input.eval_size",
    "ignore_label",
)

# The spec's entries a user can set (`num_classes` comes from the data, not the config).
CONFIG_KEYS = tuple(k for k in KEYS.values() if k != "num_classes")
# The saved config's entry recording what the classes are (beside the config's own entries):
# `{"num_classes": N, "names": [...], "palette": [[r, g, b], ...]}`.
RECORD = "classes"


def classes_record(info: taxonomy.DatasetInfo) -> dict[str, Any]:
    """The record of a dataset's classes saved with a run's checkpoints (`RECORD`)."""
    return {
        "num_classes": len(info.class_names),
        "names": list(info.class_names),
        "palette": np.asarray(info.palette).tolist(),
    }


def record_info(saved: Mapping[str, Any], num_classes: int) -> taxonomy.DatasetInfo | None:
    """The classes and palette a saved config records (None: a checkpoint saved before the
    record existed, or a record of another number of classes than the classifier's)."""
    record = saved.get(RECORD)
    if not isinstance(record, Mapping) or len(record.get("names", ())) != num_classes:
        return None
    name = saved.get("dataset", {}).get("name") or "unknown"
    return taxonomy.custom_info(name, record["names"], np.asarray(record["palette"], np.uint8))


def without_record(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config without `RECORD`: the config's own entries."""
    return {k: v for k, v in saved.items() if k != RECORD}


def same_value(a: Any, b: Any) -> bool:
    """Two config values are the same (tuples and lists alike; floats to 1e-3 in sequences)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        a, b = tuple(a), tuple(b)
    try:
        return _same(a, b)
    except (TypeError, ValueError):
        return a == b


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """Every setting that changes what a checkpoint's numbers mean (module docstring).

    `cff_upsampling` is ICNet's only (None for PSPNet), `output_stride` PSPNet's only (None for
    ICNet); `num_classes` is None where unknown (a config without data); `frozen_bn` is
    `build.frozen_bn`: the layers whose BatchNorm statistics training keeps ('none', 'trunk',
    'all'); `bn_folded`: the statistics are the placeholders of BN-folded weights.
    """

    name: str
    width: float
    cff_upsampling: str | None
    output_stride: int | None
    align_corners: bool
    stem: str
    stride_on: str
    shortcut: str
    num_classes: int | None
    bgr: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bn_folded: bool
    frozen_bn: str

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | ml_collections.ConfigDict, num_classes: int | None = None
    ) -> WeightsSpec:
        """The spec of a config (a ConfigDict, or a saved config dict: upgraded first)."""
        if isinstance(config, ml_collections.ConfigDict):
            config = config.to_dict()
        c = ml_collections.ConfigDict(upgrade(config))
        m, i = c.model, c.input
        return cls(
            name=m.name,
            width=float(m.width),
            cff_upsampling=m.cff_upsampling if m.name == "icnet" else None,
            output_stride=int(m.output_stride) if m.name == "pspnet" else None,
            align_corners=bool(m.align_corners),
            stem=m.stem,
            stride_on=m.stride_on,
            shortcut=m.shortcut,
            num_classes=None if num_classes is None else int(num_classes),
            bgr=bool(i.bgr),
            mean=tuple(float(v) for v in i.mean),
            std=tuple(float(v) for v in i.std),
            bn_folded=bool(c.bn_folded),
            frozen_bn=build.frozen_bn(c),
        )

    def differences(
        self, other: WeightsSpec, ignore: tuple[str, ...] = ()
    ) -> list[tuple[str, Any, Any]]:
        """`(setting, self's value, other's value)` of every setting that differs (config keys;
        a None number of classes is unknown and differs from none; means and stds agree to
        1e-3)."""
        rows = []
        for field in dataclasses.fields(self):
            if field.name in ignore:
                continue
            ours, theirs = getattr(self, field.name), getattr(other, field.name)
            if field.name == "num_classes" and None in (ours, theirs):
                continue
            if not _same(ours, theirs):
                rows.append((KEYS[field.name], ours, theirs))
        return rows

    def describe(self) -> str:
        """'icnet width 0.25, 9 classes' (the CFF when not bilinear)."""
        text = f"{self.name} width {self.width:g}"
        if self.cff_upsampling not in (None, "bilinear"):
            text += f" cff {self.cff_upsampling}"
        return text if self.num_classes is None else f"{text}, {self.num_classes} classes"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return bool(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-3))
    return a == b


def format_differences(rows: list[tuple[str, Any, Any]], saved: str, new: str) -> str:
    """'model.stride_on: saved '1x1', new '3x3'; ...' (one line)."""
    return "; ".join(f"{key}: {saved} {_text(a)}, {new} {_text(b)}" for key, a, b in rows)


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else repr(v) for v in value) + ")"
    return repr(value)


def upgrade(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a saved config with every weights setting it predates set to the release's value
    (`get_config()`'s defaults: the trunk switches, frozen statistics off, not BN-folded). `{}`
    (no saved config) stays `{}`."""
    out = copy.deepcopy(dict(saved))
    if not out:
        return out
    defaults = get_config().to_dict()
    model = out.setdefault("model", {})
    for key, value in defaults["model"].items():
        model.setdefault(key, value)
    inputs = out.setdefault("input", {})
    for key in ("bgr", "mean", "std"):
        inputs.setdefault(key, defaults["input"][key])
    out.setdefault("bn_folded", False)
    out.setdefault("init_checkpoint", "")
    out.setdefault("init_backbone", "")
    return out


def restore_target(saved: Mapping[str, Any], num_classes: int) -> Any:
    """The abstract `TrainState` (`jax.eval_shape`) of a saved config's model and optimiser: the
    target every reader restores a checkpoint with (the optimiser state is part of it)."""
    # A section the saved config lacks (a hand-written one without `optim`) takes the defaults.
    config = ml_collections.ConfigDict({**get_config().to_dict(), **upgrade(saved)})
    model = build.create_model(config, num_classes)
    tx = build.create_optimizer(config)
    # Parameter shapes do not depend on the image size: a small one traces fast.
    create = functools.partial(build.create_train_state, model=model, tx=tx, image_size=(65, 65))
    return jax.eval_shape(create, jax.random.PRNGKey(0))
