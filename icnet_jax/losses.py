"""Cascade label guidance (paper Eq. 2): softmax cross entropy on every branch."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from icnet_jax.models.layers import resize_nearest

Array = jax.Array


def cross_entropy_sum(logits: Array, labels: Array, ignore_label: int = 255) -> tuple[Array, Array]:
    """Summed softmax cross entropy over labelled pixels, and their count.

    Args:
      logits: `[N, h, w, C]`.
      labels: `[N, h, w]` integer class ids; `ignore_label` marks unlabelled pixels.
    Returns:
      `(sum of -log p(label) in nats, number of labelled pixels)`, both float32 scalars.
    """
    logits = logits.astype(jnp.float32)
    valid = labels != ignore_label
    # A one-hot product rather than a gather: its gradient is dense, not a scatter-add.
    one_hot = jax.nn.one_hot(jnp.where(valid, labels, 0), logits.shape[-1], dtype=logits.dtype)
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(logits * one_hot, axis=-1)
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid, dtype=jnp.float32)


def cascade_loss(
    logits: Mapping[str, Array],
    labels: Array,
    weights: Mapping[str, float],
    *,
    ignore_label: int = 255,
    align_corners: bool = True,
    axis_name: str | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Weighted sum over branches of the mean cross entropy over labelled pixels.

    Labels are shrunk by nearest neighbour to each branch's resolution (1/16, 1/8, 1/4 for ICNet).
    A branch with no labelled pixel contributes 0.

    Under `pmap`, pass `axis_name`: each branch's mean then divides the local sum by the GLOBAL
    count of labelled pixels, so the psum over devices of the returned loss (and of its gradients)
    is exactly the loss of the whole global batch, however unevenly the ignored pixels fall.

    Args:
      logits: branch name -> `[N, h_t, w_t, C]`.
      labels: `[N, H, W]` integer class ids.
      weights: branch name -> loss weight (lambda_t); branches without a weight are not used.
    Returns:
      `(loss, {branch: mean cross entropy})`, float32 scalars (per-device shares under pmap).
    """
    total = jnp.zeros((), jnp.float32)
    per_branch = {}
    for name, weight in weights.items():
        branch_labels = resize_nearest(labels, logits[name].shape[1:3], align_corners)
        nll, count = cross_entropy_sum(logits[name], branch_labels, ignore_label)
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name)
        per_branch[name] = nll / jnp.maximum(count, 1.0)
        total = total + weight * per_branch[name]
    return total, per_branch
