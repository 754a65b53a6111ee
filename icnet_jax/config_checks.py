"""The domain of every config field a run reads, checked before anything is compiled or written.

`check(config)` raises one `errors.UserError` naming every field out of its domain, each as the
flag that sets it (`--config.optim.lr=-1: must be > 0`), joined by '; '. Fields a config lacks
(configs saved before they existed) are skipped. The architecture's option names (branches, CFF,
stem, stride, shortcut) are imported from `models/`, where they are defined; the loss's are
repeated here, not imported from `train/` (above this module); tests/test_config_checks.py keeps
those in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from icnet_jax.errors import UserError
from icnet_jax.models.backbone import SHORTCUTS, STEM_LAYERS, STRIDE_ON
from icnet_jax.models.icnet import BRANCHES, CFF_UPSAMPLING

MODEL_NAMES = ("icnet", "pspnet")
STEMS = tuple(STEM_LAYERS)
# float64 computes with JAX_ENABLE_X64=1 (exact comparisons in the tests).
DTYPES = ("float32", "bfloat16", "float16", "float64")
OUTPUT_STRIDES = (8, 16, 32)
CLASS_WEIGHT_METHODS = ("median_frequency", "enet")
OHEM_SCOPES = ("image", "batch")
OHEM_NORMALIZE = ("kept", "labelled", "pixels")

_MISSING = object()
Check = Callable[[Any], str | None]  # a value -> what is wrong with it, or None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(low: float | None = None, high: float | None = None, *, closed=(True, True)) -> Check:
    """A finite number in [low, high] (`closed` says which ends are included)."""
    lo = "" if low is None else ("[" if closed[0] else "(") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + ("]" if closed[1] else ")")

    def check(value: Any) -> str | None:
        ok = _is_number(value)
        ok = ok and (low is None or value > low or (closed[0] and value == low))
        ok = ok and (high is None or value < high or (closed[1] and value == high))
        if ok:
            return None
        if high is None:
            return f"must be {'>=' if closed[0] else '>'} {low:g}"
        return f"must be in {lo}, {hi}"

    return check


def integer(low: int) -> Check:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and value >= low else f"must be an integer >= {low}"

    return check


def one_of(choices: Sequence[Any]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


def size_pair(optional: bool = False) -> Check:
    """Two positive integers (height, width); with `optional` also None."""

    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == 2
            and all(_is_int(v) and v > 0 for v in value)
        ):
            return None
        return "must be two positive integers HEIGHT,WIDTH, e.g. '(513, 513)'" + (
            " (or None)" if optional else ""
        )

    return check


def scale_range(value: Any) -> str | None:
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(_is_number(v) for v in value)
        and 0 < value[0] <= value[1]
    ):
        return None
    return "must be two numbers LOW,HIGH with 0 < LOW <= HIGH, e.g. '(0.5, 2.0)'"


def triple(positive: bool) -> Check:
    """Three finite numbers (one per RGB channel), all > 0 with `positive`."""

    def check(value: Any) -> str | None:
        if (
            isinstance(value, Sequence)
            and len(value) == 3
            and all(_is_number(v) and (v > 0 or not positive) for v in value)
        ):
            return None
        return f"must be three {'positive ' if positive else ''}numbers, one per channel"

    return check


def class_weights(value: Any) -> str | None:
    """'' | a method | explicit weights: finite, >= 0, not all 0 (their count is checked against
    the dataset's classes by data/class_stats.py, which knows it)."""
    if isinstance(value, str) and value.strip() in ("", *CLASS_WEIGHT_METHODS):
        return None
    items = value.strip("()[] ").split(",") if isinstance(value, str) else value
    try:
        weights = [float(w) for w in items]
    except (TypeError, ValueError):
        weights = []
    if weights and all(math.isfinite(w) and w >= 0 for w in weights) and any(weights):
        return None
    return (
        f"use '' (none), {' or '.join(map(repr, CLASS_WEIGHT_METHODS))}, or one finite weight "
        ">= 0 per class separated by commas, not all 0"
    )


# The log and checkpoint cadences divide the step number (0 is no cadence); eval_every 0 means
# "only at the end".
FIELDS: dict[str, Check] = {
    "batch_size": integer(1),
    "num_steps": integer(0),
    "log_every": integer(1),
    "checkpoint_every": integer(1),
    "eval_every": integer(0),
    "keep_checkpoints": integer(1),
    "model.name": one_of(MODEL_NAMES),
    "model.width": number(0, 1, closed=(False, True)),
    "model.branch": one_of(BRANCHES),
    "model.cff_upsampling": one_of(CFF_UPSAMPLING),
    "model.output_stride": one_of(OUTPUT_STRIDES),
    "model.bn_momentum": number(0, 1, closed=(True, False)),
    "model.dtype": one_of(DTYPES),
    "model.stem": one_of(STEMS),
    "model.stride_on": one_of(STRIDE_ON),
    "model.shortcut": one_of(SHORTCUTS),
    "input.crop_size": size_pair(),
    "input.eval_size": size_pair(optional=True),
    "input.scale_range": scale_range,
    "input.mean": triple(positive=False),
    "input.std": triple(positive=True),
    "input.worker_count": integer(0),
    "optim.lr": number(0, closed=(False, True)),
    "optim.power": number(0),
    "optim.momentum": number(0, 1, closed=(True, False)),
    "optim.weight_decay": number(0),
    "loss_weights.*": number(0),  # every branch's
    "loss.class_weights": class_weights,
    "loss.ohem_thresh": number(0, 1, closed=(False, True)),
    "loss.ohem_min_kept": integer(0),
    "loss.ohem_scope": one_of(OHEM_SCOPES),
    "loss.ohem_normalize": one_of(OHEM_NORMALIZE),
}


def _get(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return _MISSING
    return node


def _flag_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(_flag_value, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def problems(config: Any) -> list[str]:
    """One `--config.KEY=VALUE: what is wrong` line per field of `config` out of its domain."""
    found = []
    for key, check in FIELDS.items():
        if key.endswith(".*"):  # every entry of a dict
            node = _get(config, key[:-2])
            node = {} if node is _MISSING else node
            entries = {f"{key[:-2]}.{k}": v for k, v in node.items()}
        else:
            entries = {key: _get(config, key)}
        for name, value in entries.items():
            reason = None if value is _MISSING else check(value)
            if reason is not None:
                found.append(f"--config.{name}={_flag_value(value)}: {reason}")
    return found


def check(config: Any) -> None:
    """Raises UserError naming every field of `config` out of its domain (see the module doc)."""
    found = problems(config)
    if found:
        raise UserError("; ".join(found))
