"""Independent numpy references for the tests (written from the definitions, not from the code)."""

from __future__ import annotations

import numpy as np


def sample_positions(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """Where output pixel i samples the input axis, as the release (Caffe Interp) or TF2 do."""
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    return np.clip((i + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)


def interpolation_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """`[out, in]` matrix of linear-interpolation weights along one axis."""
    matrix = np.zeros((out_size, in_size))
    for i, s in enumerate(sample_positions(in_size, out_size, align_corners)):
        lo = min(int(np.floor(s)), in_size - 1)
        hi = min(lo + 1, in_size - 1)
        matrix[i, lo] += 1 - (s - lo)
        matrix[i, hi] += s - lo
    return matrix


def resize_bilinear(x: np.ndarray, size, align_corners: bool = True) -> np.ndarray:
    """Bilinear resize of `[N, H, W, C]`, float64."""
    rows = interpolation_matrix(x.shape[1], size[0], align_corners)
    cols = interpolation_matrix(x.shape[2], size[1], align_corners)
    return np.einsum("ih,jw,nhwc->nijc", rows, cols, x.astype(np.float64), optimize=True)


def resize_nearest(labels: np.ndarray, size, align_corners: bool = True) -> np.ndarray:
    """Nearest-neighbour resize of `[N, H, W]`: align corners rounds the sample position,
    half-pixel takes the pixel whose area holds the output pixel's centre."""
    out = labels
    for axis, n in ((1, size[0]), (2, size[1])):
        m = out.shape[axis]
        if align_corners:
            index = np.floor(sample_positions(m, n, True) + 0.5)
        else:
            index = np.floor((np.arange(n) + 0.5) * m / n)
        out = np.take(out, np.clip(index, 0, m - 1).astype(int), axis=axis)
    return out


def average_pool(x: np.ndarray, kernel, stride) -> np.ndarray:
    """VALID average pooling of `[N, H, W, C]` with explicit loops."""
    n, h, w, c = x.shape
    oh, ow = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            window = x[
                :,
                i * stride[0] : i * stride[0] + kernel[0],
                j * stride[1] : j * stride[1] + kernel[1],
            ]
            out[:, i, j] = window.mean(axis=(1, 2))
    return out


def cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore_label: int = 255):
    """(sum over labelled pixels of -log softmax(logits)[label], count), float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    total, count = 0.0, 0
    for index in np.ndindex(labels.shape):
        if labels[index] != ignore_label:
            total -= log_p[index][labels[index]]
            count += 1
    return total, count


def softmax_probabilities(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ohem_keep(logits, labels, thresh, min_kept, ignore_label=255) -> np.ndarray:
    """mmseg's OHEMPixelSampler, image by image: sort the labelled pixels' probabilities of their
    true class; threshold = max(thresh, the sorted value at min(min_kept, n - 1)); keep p < it."""
    prob = softmax_probabilities(logits)
    keep = np.zeros(labels.shape, bool)
    for n in range(labels.shape[0]):
        p_true = {}
        for index in np.ndindex(labels[n].shape):
            if labels[n][index] != ignore_label:
                p_true[index] = prob[n][index][labels[n][index]]
        if not p_true:
            continue
        ordered = sorted(p_true.values())
        threshold = max(thresh, ordered[min(min_kept, len(ordered) - 1)])
        for index, p in p_true.items():
            keep[n][index] = p < threshold
    return keep


def weighted_cross_entropy(logits, labels, class_weights=None, keep=None, ignore_label=255):
    """(sum over kept labelled pixels of w[label] * -log softmax(logits)[label], sum of w[label]),
    float64; w = 1 without class weights, every labelled pixel kept without `keep`."""
    log_p = np.log(softmax_probabilities(logits))
    total, weight_sum = 0.0, 0.0
    for index in np.ndindex(labels.shape):
        y = labels[index]
        if y == ignore_label or (keep is not None and not keep[index]):
            continue
        w = 1.0 if class_weights is None else float(class_weights[y])
        total -= w * log_p[index][y]
        weight_sum += w
    return total, weight_sum


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int, ignore=255):
    out = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(labels.ravel(), predictions.ravel()):
        if t != ignore:
            out[t, p] += 1
    return out
