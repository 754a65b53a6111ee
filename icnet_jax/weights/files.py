"""Weight files read into flat `{'layer/param': array}` dicts, whatever wrote them.

- `.npy` (a pickled dict of layers, as the ICNet/PSPNet ports save them; unpickled by
  `npy_pickle`, which refuses anything but arrays and plain containers) and `.npz` (no pickles);
- TensorFlow checkpoints (`PREFIX.index` + `PREFIX.data-*`), read without TensorFlow (which
  is 1.9 GB installed and 3.3 s and 0.9 GB of memory to import: docs/pretrained.md);
- `.safetensors`, read by `safetensors.numpy` (no torch); PyTorch files (`.pth`, ...), read with
  torch (an extra).
`read_weights` picks the reader by the file's suffix.

Anything else raises `WeightsError` (a `errors.UserError`: one `error:` line) saying what the file
is not.
"""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Mapping
from typing import Any

import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy, which safetensors needs for BF16
import numpy as np
import safetensors.numpy

from icnet_jax import errors
from icnet_jax.weights import npy_pickle


class WeightsError(ValueError, errors.UserError):
    """The weights file is unreadable or does not match the model the config describes."""


def mismatch_summary(missing: list[str], extra: list[str], misshaped: list[str]) -> str:
    """'2 missing: a, b; 1 wrong shape: c [3, 3]': the tensors of a file that do not fit a model."""
    groups = (("missing", missing), ("unexpected", extra), ("wrong shape", misshaped))
    parts = (f"{len(items)} {title}: " + ", ".join(items) for title, items in groups if items)
    return "; ".join(parts)


def flatten_tensors(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`{layer: {param: array}}` or `{'layer/param': array}` -> `{'layer/param': array}`."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            for sub, array in flatten_tensors(value).items():
                out[f"{key}/{sub}"] = array
        else:
            out[str(key)] = np.asarray(value)
    return out


_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def load_release(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a released-weights file (`.npy` dict, `.npz` or TF checkpoint), flat names.

    The format is told by the file's first bytes (a TF checkpoint by its `.index` file); anything
    else raises `WeightsError` saying what the file is not.
    """
    path = pathlib.Path(path)
    tf_index = path.suffix == ".index" or pathlib.Path(f"{path}.index").is_file()
    if not path.exists() and not tf_index:
        raise WeightsError(f"{path}: no such file or folder (--input)")
    head = path.open("rb").read(len(_NPY_MAGIC)) if path.is_file() and not tf_index else b""
    try:
        if head == _NPY_MAGIC:
            data = npy_pickle.load_npy(path)
            if data.dtype != object or data.shape != ():
                raise WeightsError(
                    f"{path}: a NumPy array {data.shape} of {data.dtype}, not the pickled dict "
                    "of layers the ports save (np.save(path, {layer: {param: array}}))"
                )
            return flatten_tensors(data.item())
        if head.startswith(_ZIP_MAGIC):
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        if path.is_dir() or tf_index or path.name.split(".")[-1].startswith("data-"):
            return read_tf_checkpoint(path)
    except WeightsError:
        raise
    except npy_pickle.RefusedGlobal as refused:
        raise WeightsError(
            f"{path}: refused to unpickle {refused.global_name}: a weights .npy holds only "
            "arrays and containers of them, and this file would run code when loaded"
        ) from None
    except Exception as error:  # noqa: BLE001 - numpy, pickle and our reader raise many types
        kind = "NumPy" if head else "TensorFlow checkpoint"
        raise WeightsError(f"{path}: not a readable {kind} weights file ({error})") from error
    raise WeightsError(
        f"{path}: neither a NumPy .npy/.npz file (it does not start with their magic bytes) "
        "nor a TensorFlow checkpoint (no .index file)"
    )


# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# `prefix.index` is a LevelDB-format table (tensorflow/core/lib/io/table*) mapping '' to a
# BundleHeaderProto and each tensor name to a BundleEntryProto (dtype, shape, shard_id, offset,
# size); the raw little-endian bytes are in `prefix.data-<shard>-of-<num_shards>`.
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_TF_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}  # fmt: skip


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> dict[int, list[Any]]:
    """Protobuf wire format: `{field number: [values]}` (varints as int, fixed as int, bytes)."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _table_block(data: bytes, handle: bytes, pos: int = 0) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the table block a BlockHandle points to."""
    offset, pos = _varint(handle, pos)
    size, _ = _varint(handle, pos)
    block = data[offset : offset + size]
    compression = data[offset + size] if offset + size < len(data) else 0
    if compression != 0:
        raise ValueError(f"compressed table block (type {compression}): not a TF bundle index")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (num_restarts + 1)
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def _bundle_prefix(path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.exists():  # the `checkpoint` state file: model_checkpoint_path: "..."
            for line in state.read_text().splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    return (
                        (path / name)
                        if not pathlib.Path(name).is_absolute()
                        else pathlib.Path(name)
                    )
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise FileNotFoundError(
                f"{path}: expected one *.index checkpoint, found {len(indexes)}"
            )
        path = indexes[0]
    if path.suffix == ".index":
        return path.with_suffix("")
    if path.name.split(".")[-1].startswith("data-"):
        return path.with_name(path.name.rsplit(".", 1)[0])
    return path


def read_tf_checkpoint(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a TensorFlow (V2 format) checkpoint as `{name: array}`, without TF.

    `path`: the `.index` file, the checkpoint prefix (`model.ckpt-60000`), or a folder.
    """
    prefix = _bundle_prefix(path)
    index = pathlib.Path(str(prefix) + ".index").read_bytes()
    if len(index) < _FOOTER_SIZE:
        raise ValueError(f"{prefix}.index is too short for a TensorFlow checkpoint index")
    footer = index[-_FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise ValueError(f"{prefix}.index is not a TensorFlow checkpoint index (bad magic)")
    _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle
    entries = []
    for _, handle in _table_block(index, footer, pos):
        entries += _table_block(index, handle)
    num_shards, big_endian = 1, False
    tensors: dict[str, np.ndarray] = {}
    shards: dict[int, bytes] = {}
    for key, value in entries:
        fields = _proto_fields(value)
        if key == b"":  # BundleHeaderProto
            num_shards = fields.get(1, [1])[0]
            big_endian = fields.get(2, [0])[0] == 1
            continue
        name = key.decode()
        if 7 in fields:
            raise ValueError(f"{name}: partitioned (sliced) variables are not supported")
        dtype = _TF_DTYPES.get(fields.get(1, [0])[0])
        if dtype is None:
            continue  # strings and other non-numeric entries: not weights
        shape = []
        for dim in _proto_fields(fields[2][0]).get(2, []) if 2 in fields else []:
            shape.append(_signed64(_proto_fields(dim).get(1, [0])[0]))
        shard, offset, size = (fields.get(i, [0])[0] for i in (3, 4, 5))
        if shard not in shards:
            shards[shard] = pathlib.Path(
                f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
            ).read_bytes()
        raw = shards[shard][offset : offset + size]
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
        tensors[name] = array.astype(dtype).reshape(shape)
    return tensors


# --------------------------------------------------------------------------------------------
# Reading the released tensors
# --------------------------------------------------------------------------------------------


_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
# Containers around a state dict: mmcv/mmseg (`state_dict`), timm and detectron training
# checkpoints (`model`, `state_dict_ema`).
_WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file, by `safetensors.numpy` (no torch needed); BF16
    tensors come as `ml_dtypes.bfloat16`."""
    try:
        return safetensors.numpy.load_file(path)
    except Exception as error:  # noqa: BLE001 - SafetensorError, and numpy's for odd dtypes
        raise errors.UserError(f"{path}: not a safetensors file ({error})") from None


def read_torch(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch file (`torch.save` of a state dict, possibly wrapped), as numpy;
    entries that are not tensors (epoch, meta, optimizer) are left out. Needs torch."""
    try:
        import torch
    except ImportError:
        raise errors.UserError(
            f"{path}: reading a PyTorch file needs torch (pip install -r "
            "requirements-pretrained.txt), or convert it to .safetensors, which is read without it"
        ) from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise errors.UserError(f"{path}: torch cannot read it as weights ({reason})") from None
    if hasattr(data, "state_dict") and not isinstance(data, Mapping):  # a pickled nn.Module
        data = data.state_dict()
    if not isinstance(data, Mapping):
        raise errors.UserError(f"{path}: expected a state dict, found {type(data).__name__}")
    if not any(isinstance(v, torch.Tensor) for v in data.values()):
        data = next((data[k] for k in _WRAPPERS if isinstance(data.get(k), Mapping)), data)
    out = {}
    for name, value in data.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            out[str(name)] = (value.float() if value.is_floating_point() else value).numpy()
    return out


def read_weights(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Flat `{name: array}` of a `.safetensors`, PyTorch (`.pth`, `.pt`, `.bin`, ...) or release
    (`.npy` dict, `.npz`, TF checkpoint) file."""

    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise errors.UserError(f"{path}: no such file (config.init_backbone)")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix in _TORCH_SUFFIXES:
        return read_torch(path)
    if path.suffix in (".npy", ".npz") or path.is_dir() or path.suffix == ".index":
        return load_release(path)  # its errors are one-line UserErrors
    raise errors.UserError(
        f"{path}: unknown weights format {path.suffix!r}; expected .safetensors, .pth (torch) "
        "or .npy (the PSPNet50 release)"
    )
