"""Cascade label guidance (paper Eq. 2): softmax cross entropy on every branch.

Two options for small, imbalanced datasets: per-class weights (a weighted mean over the labelled
pixels) and online hard pixel mining (OHEM: the choice of pixels of mmsegmentation's
OHEMPixelSampler per image or, as mmsegmentation, over the batch, with a choice of denominator,
see `Ohem`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from icnet_jax.errors import UserError
from icnet_jax.models.layers import resize_nearest

Array = jax.Array


OHEM_NORMALIZE = ("kept", "labelled", "pixels")
OHEM_SCOPES = ("image", "batch")


@dataclasses.dataclass(frozen=True)
class Ohem:
    """Online hard pixel mining: keep the labelled pixels whose softmax probability of the true
    class is below `max(thresh, p_k)`, `p_k` the k-th smallest such probability (0-based; the
    largest when fewer than k + 1 pixels are labelled), so that at least k pixels are kept.

    `scope` (`config.loss.ohem_scope`) says over which pixels `p_k` is taken:
    - 'image' (the default): each image's labelled pixels, k = `min_kept`: every image keeps at
      least `min_kept` pixels, however easy it is;
    - 'batch' (mmsegmentation's OHEMPixelSampler): one threshold over the labelled pixels of the
      whole GLOBAL batch of N images (all devices under pmap), k = `min_kept * N`: an easy image
      may keep fewer than `min_kept` pixels when a hard one holds many.

    `min_kept` counts pixels at the resolution of the labels given to `cascade_loss`; each branch
    keeps the same fraction of its (smaller) map, rounded up, per image.

    `normalize` (`config.loss.ohem_normalize`) is the denominator D of each branch's loss
    `sum over kept pixels of w[y] * ce / D` (w: the class weights, 1 without), over the global
    batch:
    - 'kept' (the default; PyTorch's weighted mean over the kept pixels, as the ICNet/PSPNet
      ports' `OhemCrossEntropy2d`): `sum over KEPT pixels of w[y]` (their count without class
      weights); the loss keeps its scale however few pixels are kept;
    - 'labelled' (mmsegmentation's CrossEntropyLoss with `avg_non_ignore=True`, taking the
      sampler's 0/1 pixel weights): the COUNT of labelled pixels, not class weighted (so with
      class weights their scale matters); the easy pixels contribute 0, so the loss shrinks as
      the network gets them right;
    - 'pixels' (mmsegmentation's default, `avg_non_ignore=False`): the count of ALL pixels of the
      branch's map, unlabelled ones included.
    """

    thresh: float = 0.7
    min_kept: int = 100_000
    normalize: str = "kept"
    scope: str = "image"

    @classmethod
    def from_config(cls, loss_config: Any) -> Ohem | None:
        """Mining as `config.loss` (`ohem`, `ohem_thresh`, `ohem_min_kept`, `ohem_normalize`,
        `ohem_scope`) asks, or None."""
        if not loss_config.ohem:
            return None
        if not 0 < loss_config.ohem_thresh <= 1 or loss_config.ohem_min_kept < 0:
            raise UserError(
                "config.loss.ohem_thresh must be in (0, 1] and config.loss.ohem_min_kept >= 0, "
                f"got {loss_config.ohem_thresh} and {loss_config.ohem_min_kept}"
            )
        normalize = loss_config.get("ohem_normalize", "kept")
        if normalize not in OHEM_NORMALIZE:
            raise UserError(
                f"config.loss.ohem_normalize={normalize!r}: choose one of {OHEM_NORMALIZE} "
                "('kept': the ports' mean over the hard pixels, 'labelled' and 'pixels': "
                "mmsegmentation's with avg_non_ignore=True and False)"
            )
        scope = loss_config.get("ohem_scope", "image")
        if scope not in OHEM_SCOPES:
            raise UserError(
                f"config.loss.ohem_scope={scope!r}: choose one of {OHEM_SCOPES} ('image': "
                "min_kept per image; 'batch': min_kept * batch size over the batch, as mmseg)"
            )
        return cls(loss_config.ohem_thresh, loss_config.ohem_min_kept, normalize, scope)


def _kth_smallest(prob: Array, num_valid: Array, k: int) -> Array:
    """`[B]`: per row of `prob` `[B, P]`, the value at 0-based index `min(k, num_valid - 1)` of the
    sorted row (index 0 when nothing is labelled). Unlabelled entries must sort last."""
    k = min(k, prob.shape[1] - 1)
    # The k+1 smallest of each row (static shape; cheaper than a full sort).
    smallest = -jax.lax.top_k(-prob, k + 1)[0]
    index = jnp.clip(jnp.minimum(k, num_valid - 1), 0, k)
    return jnp.take_along_axis(smallest, index[:, None], axis=1)[:, 0]


def _batch_kth_smallest(prob: Array, num_valid: Array, k: int, axis_name: str | None) -> Array:
    """Scalar: `_kth_smallest` over the pixels `prob` `[P]` of every device on `axis_name`. Each
    device's k+1 smallest hold the global k+1 smallest, so only those are gathered."""
    smallest = -jax.lax.top_k(-prob, min(k + 1, prob.shape[0]))[0]
    if axis_name is not None:
        smallest = jax.lax.all_gather(smallest, axis_name).reshape(-1)
        num_valid = jax.lax.psum(num_valid, axis_name)
    return _kth_smallest(smallest[None], num_valid[None], k)[0]


def ohem_mask(
    nll: Array,
    valid: Array,
    thresh: float,
    min_kept: int,
    *,
    scope: str = "image",
    axis_name: str | None = None,
) -> Array:
    """`[N, h, w]` bool: the hard pixels (see `Ohem`), chosen per image or over the batch.

    Args:
      nll: `[N, h, w]` -log p(true class) in nats; no gradient flows through the selection.
      valid: `[N, h, w]` bool, the labelled pixels.
      min_kept: per image (the batch's k is `min_kept` times the global number of images).
      scope: 'image' or 'batch'.
      axis_name: under pmap, the batch axis: the 'batch' threshold is the global batch's.
    """
    n = nll.shape[0]
    # Unlabelled pixels get probability 2: above any threshold, sorted after every labelled one.
    prob = jnp.where(valid, jnp.exp(-jax.lax.stop_gradient(nll)), 2.0)
    if scope == "image":
        num_valid = jnp.sum(valid.reshape(n, -1), axis=1)
        kth = _kth_smallest(prob.reshape(n, -1), num_valid, min_kept)[:, None, None]
    elif scope == "batch":
        devices = 1 if axis_name is None else jax.lax.psum(1, axis_name)
        k = min_kept * n * devices
        kth = _batch_kth_smallest(prob.reshape(-1), jnp.sum(valid), k, axis_name)
    else:
        raise ValueError(f"scope must be one of {OHEM_SCOPES}, got {scope!r}")
    return valid & (prob < jnp.maximum(kth, thresh))


def cross_entropy_sum(
    logits: Array,
    labels: Array,
    ignore_label: int = 255,
    *,
    class_weights: Array | None = None,
    ohem: Ohem | None = None,
    min_kept: int | None = None,
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """Weighted sum of softmax cross entropy over the labelled (with OHEM: kept) pixels, and the
    denominator of their mean, both local to this device.

    A pixel's weight is `class_weights[label]` (1 without class weights), times 0 for a pixel that
    OHEM drops; unlabelled pixels weigh 0. The denominator is the sum of the weights, except with
    OHEM normalising by 'labelled' (the count of labelled pixels) or 'pixels' (the count of all
    pixels, `N * h * w`): see `Ohem`. Without either option this is `(sum of -log p(label),
    number of labelled pixels)`.

    Args:
      logits: `[N, h, w, C]`.
      labels: `[N, h, w]` integer class ids; `ignore_label` marks unlabelled pixels.
      class_weights: `[C]` float, or None.
      ohem: hard pixel mining, or None; `min_kept` overrides its `min_kept` (per branch).
      axis_name: under pmap, the batch axis ('batch' OHEM chooses over the global batch).
    Returns:
      `(sum of weight * -log p(label) in nats, denominator)`, both float32 scalars.
    """
    logits = logits.astype(jnp.float32)
    valid = labels != ignore_label
    safe_labels = jnp.where(valid, labels, 0)
    # A one-hot product rather than a gather: its gradient is dense, not a scatter-add.
    one_hot = jax.nn.one_hot(safe_labels, logits.shape[-1], dtype=logits.dtype)
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(logits * one_hot, axis=-1)
    keep = valid
    if ohem is not None:
        kept = ohem.min_kept if min_kept is None else min_kept
        keep = ohem_mask(nll, valid, ohem.thresh, kept, scope=ohem.scope, axis_name=axis_name)
    weight = keep.astype(jnp.float32)
    if class_weights is not None:
        weight = weight * jnp.asarray(class_weights, jnp.float32)[safe_labels]
    total = jnp.sum(jnp.where(keep, weight * nll, 0.0))
    normalize = "kept" if ohem is None else ohem.normalize
    if normalize == "labelled":
        return total, jnp.sum(valid, dtype=jnp.float32)
    if normalize == "pixels":
        return total, jnp.asarray(valid.size, jnp.float32)
    return total, jnp.sum(weight)


def cascade_loss(
    logits: Mapping[str, Array],
    labels: Array,
    weights: Mapping[str, float],
    *,
    ignore_label: int = 255,
    align_corners: bool = True,
    axis_name: str | None = None,
    class_weights: Array | None = None,
    ohem: Ohem | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Weighted sum over branches of the (weighted) mean cross entropy over labelled pixels.

    Labels are shrunk by nearest neighbour to each branch's resolution (1/16, 1/8, 1/4 for ICNet).
    A branch with no labelled (or no kept) pixel contributes 0.

    With `class_weights` each branch's mean is `sum(w[y] * ce) / sum(w[y])` over the labelled
    pixels of the whole batch (so the scale of `w` does not matter); with `ohem` only the hard
    pixels, chosen per branch, enter the first sum, and the denominator is `ohem.normalize`'s
    (see `Ohem`).

    Under `pmap`, pass `axis_name`: each branch's mean then divides the local sum by the GLOBAL
    denominator (the labelled-pixel count without options), and 'batch' OHEM takes its threshold
    over the global batch, so the psum over devices of the returned loss (and of its gradients)
    is exactly the loss of the whole global batch on one device, however unevenly the ignored or
    the hard pixels fall.

    Args:
      logits: branch name -> `[N, h_t, w_t, C]`.
      labels: `[N, H, W]` integer class ids.
      weights: branch name -> loss weight (lambda_t); branches without a weight are not used.
      class_weights: `[C]` per-class weights, or None.
      ohem: online hard pixel mining, or None.
    Returns:
      `(loss, {branch: mean cross entropy})`, float32 scalars (per-device shares under pmap).
    """
    total = jnp.zeros((), jnp.float32)
    per_branch = {}
    full_area = labels.shape[1] * labels.shape[2]
    for name, weight in weights.items():
        size = logits[name].shape[1:3]
        branch_labels = resize_nearest(labels, size, align_corners)
        min_kept = None
        if ohem is not None:
            min_kept = math.ceil(ohem.min_kept * size[0] * size[1] / full_area)
        nll, count = cross_entropy_sum(
            logits[name],
            branch_labels,
            ignore_label,
            class_weights=class_weights,
            ohem=ohem,
            min_kept=min_kept,
            axis_name=axis_name,
        )
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name)
        # The sum is 0 wherever the weights are: 0 / 1 then, with finite gradients.
        per_branch[name] = nll / jnp.where(count > 0, count, 1.0)
        total = total + weight * per_branch[name]
    return total, per_branch
