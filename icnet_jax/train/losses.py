"""Cascade label guidance (paper Eq. 2): softmax cross entropy on every branch.

Two options for small, imbalanced datasets: per-class weights (a weighted mean over the labelled
pixels) and online hard pixel mining (OHEM: mmsegmentation's OHEMPixelSampler's choice of pixels,
per image, with a choice of normalisation, see `Ohem`).
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


OHEM_NORMALIZE = ("kept", "labelled")


@dataclasses.dataclass(frozen=True)
class Ohem:
    """Online hard pixel mining: per image, keep the labelled pixels whose softmax probability of
    the true class is below `max(thresh, p_k)`, where `p_k` is the `min_kept`-th smallest such
    probability of the image (0-based), so that at least `min_kept` pixels are kept.

    `min_kept` counts pixels at the resolution of the labels given to `cascade_loss`; each branch
    keeps the same fraction of its (smaller) map, rounded up.

    `normalize` says what the sum over the kept pixels is divided by (`config.loss.ohem_normalize`):
    - 'kept' (the default; the ICNet/PSPNet PyTorch ports' `OhemCrossEntropy2d`): the (class
      weighted) count of the KEPT pixels, a mean over the hard pixels; the loss keeps its scale
      however few pixels are kept;
    - 'labelled' (mmsegmentation: the sampler's 0/1 pixel weights, then the cross entropy's mean
      over every labelled pixel): the (class weighted) count of ALL labelled pixels, as without
      OHEM; the easy pixels contribute 0, so the loss shrinks as the network gets them right.
    """

    thresh: float = 0.7
    min_kept: int = 100_000
    normalize: str = "kept"

    @classmethod
    def from_config(cls, loss_config: Any) -> Ohem | None:
        """Mining as `config.loss` (`ohem`, `ohem_thresh`, `ohem_min_kept`) asks, or None."""
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
                "('kept': the ports' mean over the hard pixels, 'labelled': mmsegmentation's)"
            )
        return cls(loss_config.ohem_thresh, loss_config.ohem_min_kept, normalize)


def ohem_mask(nll: Array, valid: Array, thresh: float, min_kept: int) -> Array:
    """`[N, h, w]` bool: the hard pixels of each image (see `Ohem`).

    Args:
      nll: `[N, h, w]` -log p(true class) in nats; no gradient flows through the selection.
      valid: `[N, h, w]` bool, the labelled pixels.
    """
    n = nll.shape[0]
    # Unlabelled pixels get probability 2: above any threshold, sorted after every labelled one.
    prob = jnp.where(valid, jnp.exp(-jax.lax.stop_gradient(nll)), 2.0).reshape(n, -1)
    k = min(min_kept, prob.shape[1] - 1)
    # The k+1 smallest probabilities of each image (static shape; cheaper than a full sort).
    smallest = -jax.lax.top_k(-prob, k + 1)[0]
    num_valid = jnp.sum(valid.reshape(n, -1), axis=1)
    index = jnp.clip(jnp.minimum(k, num_valid - 1), 0, k)
    kth = jnp.take_along_axis(smallest, index[:, None], axis=1)
    threshold = jnp.maximum(kth, thresh)
    return valid & (prob < threshold).reshape(valid.shape)


def cross_entropy_sum(
    logits: Array,
    labels: Array,
    ignore_label: int = 255,
    *,
    class_weights: Array | None = None,
    ohem: Ohem | None = None,
    min_kept: int | None = None,
) -> tuple[Array, Array]:
    """Weighted sum of softmax cross entropy over labelled pixels, and the sum of the weights.

    A pixel's weight is `class_weights[label]` (1 without class weights), times 0 for a pixel that
    OHEM drops; unlabelled pixels weigh 0. Without either option this is `(sum of -log p(label),
    number of labelled pixels)`. With OHEM normalising by 'labelled', the second sum counts the
    dropped pixels' class weights too (see `Ohem`).

    Args:
      logits: `[N, h, w, C]`.
      labels: `[N, h, w]` integer class ids; `ignore_label` marks unlabelled pixels.
      class_weights: `[C]` float, or None.
      ohem: hard pixel mining, or None; `min_kept` overrides its `min_kept` (per branch).
    Returns:
      `(sum of weight * -log p(label) in nats, sum of weights)`, both float32 scalars.
    """
    logits = logits.astype(jnp.float32)
    valid = labels != ignore_label
    safe_labels = jnp.where(valid, labels, 0)
    # A one-hot product rather than a gather: its gradient is dense, not a scatter-add.
    one_hot = jax.nn.one_hot(safe_labels, logits.shape[-1], dtype=logits.dtype)
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(logits * one_hot, axis=-1)
    keep = valid
    if ohem is not None:
        keep = ohem_mask(nll, valid, ohem.thresh, ohem.min_kept if min_kept is None else min_kept)

    def weigh(mask: Array) -> Array:
        weight = mask.astype(jnp.float32)
        if class_weights is not None:
            weight = weight * jnp.asarray(class_weights, jnp.float32)[safe_labels]
        return weight

    weight = weigh(keep)
    normaliser = weigh(valid) if ohem is not None and ohem.normalize == "labelled" else weight
    return jnp.sum(jnp.where(keep, weight * nll, 0.0)), jnp.sum(normaliser)


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
    pixels of the whole batch (so the scale of `w` does not matter); with `ohem` only each
    image's hard pixels, chosen per branch, enter the first sum, and the second too when
    `ohem.normalize` is 'kept' (every labelled pixel does when it is 'labelled').

    Under `pmap`, pass `axis_name`: each branch's mean then divides the local sum by the GLOBAL
    sum of weights (the labelled-pixel count without options), so the psum over devices of the
    returned loss (and of its gradients) is exactly the loss of the whole global batch, however
    unevenly the ignored pixels fall. OHEM chooses per image, so it is exact under pmap too.

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
        )
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name)
        # The sum is 0 wherever the weights are: 0 / 1 then, with finite gradients.
        per_branch[name] = nll / jnp.where(count > 0, count, 1.0)
        total = total + weight * per_branch[name]
    return total, per_branch
