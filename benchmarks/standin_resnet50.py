"""A stand-in for ImageNet ResNet-50 weights: torchvision `resnet50`'s state dict (names, shapes,
dtypes) with random values, written as `.safetensors` without torch.

    python benchmarks/standin_resnet50.py --out /tmp/resnet50_standin.safetensors

The file loads like the real `resnet50-11ad3fa6.pth` (or timm's `resnet50.tv_in1k`
`model.safetensors`, which has the same names) through `config.init_backbone`, so that the
README's compression recipe can be run end to end where no pretrained weights can be downloaded.
Its values are random: it tests the plumbing, not the worth of ImageNet pretraining. The tests
use the same generator and writer (an independent writer of the format our reader reads).
"""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Any

import ml_dtypes
import numpy as np

from icnet_jax import cli, errors
from icnet_jax.cli import flags

_SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(ml_dtypes.bfloat16): "BF16",
}


def write_safetensors(path: str | pathlib.Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format (an 8-byte header size, a JSON header, little-endian data)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def torchvision_resnet50(seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """torchvision resnet50's state dict names and shapes, written out from its definition
    (stride on the 3x3, projection `downsample.0/1`), with random values: convs `N(0, 1/fan_in)`,
    BN scales and variances around 1, offsets and means around 0, a 1000-class `fc`."""
    rng = np.random.default_rng(seed)
    out = {}

    def conv(name, o, i, k):
        out[f"{name}.weight"] = rng.normal(0, (i * k * k) ** -0.5, (o, i, k, k))

    def bn(name, n):
        out[f"{name}.weight"] = rng.uniform(0.5, 1.5, n)
        out[f"{name}.bias"] = rng.normal(0, 0.1, n)
        out[f"{name}.running_mean"] = rng.normal(0, 0.1, n)
        out[f"{name}.running_var"] = rng.uniform(0.5, 1.5, n)
        out[f"{name}.num_batches_tracked"] = np.array(0, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (blocks, planes) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), 1):
        for b in range(blocks):
            base = f"layer{layer}.{b}"
            conv(f"{base}.conv1", planes, inplanes, 1)
            bn(f"{base}.bn1", planes)
            conv(f"{base}.conv2", planes, planes, 3)
            bn(f"{base}.bn2", planes)
            conv(f"{base}.conv3", planes * 4, planes, 1)
            bn(f"{base}.bn3", planes * 4)
            if b == 0:
                conv(f"{base}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{base}.downsample.1", planes * 4)
            inplanes = planes * 4
    out["fc.weight"] = rng.normal(0, 0.01, (1000, 2048))
    out["fc.bias"] = np.zeros(1000)
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in out.items()}


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    tensors = torchvision_resnet50(args.seed)
    try:
        write_safetensors(args.out, tensors)
    except OSError as error:
        raise errors.UserError(
            f"cannot write {args.out}: {error.strerror}; choose another --out"
        ) from None
    count = sum(v.size for k, v in tensors.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {args.out}: torchvision resnet50 names, {count:,} random values")


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "The .safetensors file to write.", required=True)
    flags.DEFINE_integer("seed", 0, "Seed of the random values.")
    cli.run(main)
