"""Conversion of the released weights: .npy (BN folded or kept, nested or flat) and TF bundles."""

import os
import pathlib
import struct
import subprocess

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cityscapes
from icnet_jax import build, cli, errors
from icnet_jax.models import ICNet, fold_batchnorm, released_tensors
from icnet_jax.models.icnet import TRAINING_ONLY_LAYERS
from icnet_jax.models.layers import BN_EPSILON
from icnet_jax.weights import files, finetune, release
from tests import scripts
from tests.conftest import SHARED_DATA

SIZE = (65, 129)


def released_shapes() -> dict[str, tuple[int, ...]]:
    """The 128 released tensors' names and shapes (checked against the .tsv when present)."""
    model = ICNet(num_classes=19)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))
    folded = jax.eval_shape(fold_batchnorm, abstract)["params"]
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), folded)
    shapes = {k: v.shape for k, v in released_tensors(zeros, skip=TRAINING_ONLY_LAYERS).items()}
    tsv = SHARED_DATA.parent / "reference" / "icnet_cityscapes_released_tensors.tsv"
    if tsv.exists():
        expected = {}
        for line in tsv.read_text().splitlines():
            name, _, shape = line.split("\t")
            expected[name] = tuple(int(d) for d in shape.strip("[]").split(","))
        assert shapes == expected
    assert len(shapes) == 128
    return shapes


def random_release(seed=0) -> dict[str, np.ndarray]:
    """Folded release tensors with random values of realistic magnitude."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in released_shapes().items():
        if name.endswith("/weights"):
            out[name] = rng.normal(0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)
        else:
            out[name] = rng.normal(0, 0.1, shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


def nest(flat):
    out = {}
    for name, value in flat.items():
        layer, param = name.split("/")
        out.setdefault(layer, {})[param] = value
    return out


def folded_params(flat):
    """The release's folded tensors as params of `ICNet(fold_bn=True)` (independent of cw)."""
    model = ICNet(num_classes=19, fold_bn=True)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))

    def fill(tree, path):
        out = {}
        for name, value in tree.items():
            if name in TRAINING_ONLY_LAYERS:
                continue
            if isinstance(value, dict) and "kernel" in value:
                layer = "_".join(path + ((name,) if name != "conv" else ()))
                out[name] = {"kernel": flat[f"{layer}/weights"], "bias": flat[f"{layer}/biases"]}
            elif isinstance(value, dict):
                out[name] = fill(value, path if name == "conv" else path + (name,))
        return out

    params = fill(template["params"], ())
    for head in TRAINING_ONLY_LAYERS:  # not used at inference
        params[head] = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template["params"][head])
    return params


def images(seed=1):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-120, 130, (1, *SIZE, 3)), jnp.float32)


def assert_logits_close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, atol=1e-4 * scale, rtol=0)


# ---- a TF checkpoint bundle writer, in exactly TF's format (LevelDB table of protos) -----------


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not out[-1] & 0x80:
            return bytes(out)


def _pv(number, value):  # varint field
    return _varint(number << 3) + _varint(value)


def _pb(number, payload):  # length-delimited field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _block(entries, restart_interval=16):
    data, restarts, previous = b"", [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(data))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        data += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        data += key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return (
        data + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    )


def write_tf_bundle(prefix, tensors, *, shard_split=False):
    """`prefix.index` + `prefix.data-0000i-of-0000n` as TF's BundleWriter lays them out."""
    names = sorted(tensors)
    num_shards = 2 if shard_split else 1
    shards = [b""] * num_shards
    entries = [(b"", _pv(1, num_shards) + _pv(2, 0) + _pb(3, _pv(1, 1)))]  # BundleHeaderProto
    for i, name in enumerate(names):
        array = np.asarray(tensors[name])
        dtype = {np.float32: 1, np.int64: 9}[array.dtype.type]
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        shard = i % num_shards
        shape = b"".join(_pb(2, _pv(1, d)) for d in array.shape)
        entry = _pv(1, dtype) + _pb(2, shape) + _pv(3, shard) + _pv(4, len(shards[shard]))
        entry += _pv(5, len(raw)) + _varint(6 << 3 | 5) + struct.pack("<I", 0)  # crc32c
        entries.append((name.encode(), entry))
        shards[shard] += raw
    index = bytearray()

    def add(block):
        offset = len(index)
        index.extend(block + b"\x00" + struct.pack("<I", 0))  # no compression, crc
        return _varint(offset) + _varint(len(block))

    data_handles = []
    for start in range(0, len(entries), 50):  # several data blocks
        chunk = entries[start : start + 50]
        data_handles.append((chunk[-1][0], add(_block(chunk))))
    meta = add(_block([]))
    index_handle = add(_block(data_handles, restart_interval=1))
    footer = (meta + index_handle).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    pathlib.Path(f"{prefix}.index").write_bytes(bytes(index) + footer)
    for shard, data in enumerate(shards):
        pathlib.Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").write_bytes(data)


# ---- tests --------------------------------------------------------------------------------


def test_tf_bundle_reader_reads_every_tensor(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "conv1/weights": rng.normal(size=(3, 3, 3, 8)).astype(np.float32),
        "conv1/biases": rng.normal(size=(8,)).astype(np.float32),
        "conv10/weights": rng.normal(size=(1, 1, 300, 2)).astype(np.float32),  # shared prefixes
        "scalar": np.float32(3.5).reshape(()),
        "global_step": np.array(60000, np.int64),
    }
    tensors.update(
        {f"layer{i:03d}/w": rng.normal(size=(i + 1,)).astype(np.float32) for i in range(120)}
    )
    write_tf_bundle(tmp_path / "model.ckpt-60000", tensors, shard_split=True)
    for path in (tmp_path / "model.ckpt-60000.index", tmp_path / "model.ckpt-60000", tmp_path):
        read = files.read_tf_checkpoint(path)
        assert set(read) == set(tensors)
        for name, value in tensors.items():
            np.testing.assert_array_equal(read[name], value)
            assert read[name].shape == np.shape(value)


def test_real_tensorflow_checkpoint_is_read_without_tf(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    values = {
        "conv1_sub1/weights": rng.normal(size=(3, 3, 3, 32)).astype(np.float32),
        "conv1_sub1_bn/moving_mean": rng.normal(size=(32,)).astype(np.float32),
    }
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=k.replace("/", "__")) for k, v in values.items()]
        saver = tf.compat.v1.train.Saver({k: v for k, v in zip(values, variables)})
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(tmp_path / "model.ckpt"), global_step=7)
    read = files.read_tf_checkpoint(tmp_path)
    for name, value in values.items():
        np.testing.assert_array_equal(read[name], value)


def test_folded_npy_converts_to_a_checkpoint_equal_to_the_folded_model(tmp_path, logged):
    released = random_release()
    np.save(tmp_path / "icnet.npy", nest(released), allow_pickle=True)
    release.convert(tmp_path / "icnet.npy", tmp_path / "out", cityscapes.get_config())
    printed = logged()
    assert "conv6_sub2" in printed and "conv6_sub4" in printed and "randomly" in printed

    state, config, num_classes, step = finetune.restore_checkpoint(tmp_path / "out")
    assert (num_classes, step, int(state.step)) == (19, 0, 0)
    assert config["input"]["bgr"] is True
    np.testing.assert_allclose(config["input"]["mean"], (123.68, 116.779, 103.939))
    assert tuple(config["input"]["std"]) == (1.0, 1.0, 1.0)
    assert tuple(config["input"]["eval_size"]) == (1025, 2049)
    assert config["model"]["align_corners"] is True and config["model"]["width"] == 0.5
    assert config["model"]["name"] == "icnet" and config["dataset"]["name"] == "cityscapes"
    assert (tmp_path / "out" / "checkpoints" / "0" / "state").is_dir()
    np.testing.assert_array_equal(
        state.batch_stats["conv1_sub1"]["bn"]["var"], np.float32(1 - BN_EPSILON)
    )
    assert float(jnp.abs(state.params["conv6_sub4"]["kernel"]).sum()) > 0  # initialised
    # a fresh optimizer state of the release's config: zero momentum, step counts 0
    tx = build.create_optimizer(release.release_config(cityscapes.get_config(), width=0.5))
    chex.assert_trees_all_equal(state.opt_state, tx.init(state.params))

    x = images()
    ours = ICNet(num_classes=19).apply(
        {"params": state.params, "batch_stats": state.batch_stats}, x
    )
    reference = ICNet(num_classes=19, fold_bn=True).apply({"params": folded_params(released)}, x)
    assert_logits_close(ours, reference)


def bn_kept(released, seed=2):
    """BN-kept tensors whose hand-folded (numpy) form is `released`'s shapes, plus that form."""
    rng = np.random.default_rng(seed)
    kept, folded = {}, {}
    for name in released:
        layer, param = name.split("/")
        if param == "biases":
            continue
        w = released[name]
        if layer == "conv6_cls":
            kept[name], kept[f"{layer}/biases"] = w, released[f"{layer}/biases"]
            folded[name], folded[f"{layer}/biases"] = w, released[f"{layer}/biases"]
            continue
        n = w.shape[-1]
        scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
        offset = rng.normal(0, 0.1, n).astype(np.float32)
        mean = rng.normal(0, 0.1, n).astype(np.float32)
        var = rng.uniform(0.5, 2.0, n).astype(np.float32)
        kept[name] = w
        kept.update(
            {
                f"{layer}_bn/scale": scale,
                f"{layer}_bn/offset": offset,
                f"{layer}_bn/mean": mean,
                f"{layer}_bn/variance": var,
            }
        )
        s = scale / np.sqrt(var.astype(np.float64) + BN_EPSILON)
        folded[name] = (w * s).astype(np.float32)
        folded[f"{layer}/biases"] = (offset - mean * s).astype(np.float32)
    return kept, folded


def template():
    model = ICNet(num_classes=19)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))


def test_bn_kept_flat_npy_and_tf_checkpoint_equal_hand_folding(tmp_path):
    kept, folded = bn_kept(random_release())
    np.save(tmp_path / "kept.npy", kept, allow_pickle=True)  # flat {'layer/param': array}
    tf_names = {
        k.replace("_bn/scale", "_bn/gamma")
        .replace("_bn/offset", "_bn/beta")
        .replace("_bn/mean", "_bn/moving_mean")
        .replace("_bn/variance", "_bn/moving_variance"): v
        for k, v in kept.items()
    }
    tf_names["global_step"] = np.array(30000, np.int64)
    tf_names["conv1_sub1/weights/Momentum"] = kept["conv1_sub1/weights"]
    write_tf_bundle(tmp_path / "model.ckpt-30000", tf_names)

    from_npy, ignored, absent = release.release_variables(
        release.load_release(tmp_path / "kept.npy"), template()
    )
    assert ignored == [] and sorted(absent) == sorted(TRAINING_ONLY_LAYERS)
    from_tf, ignored, _ = release.release_variables(
        release.load_release(tmp_path / "model.ckpt-30000.index"), template()
    )
    assert ignored == ["conv1_sub1/weights/Momentum", "global_step"]
    chex.assert_trees_all_equal(from_npy, from_tf)

    fresh = ICNet(num_classes=19).init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 3)))
    variables, _ = finetune.merge_variables(fresh, from_npy)
    x = images()
    ours = ICNet(num_classes=19).apply(variables, x)
    reference = ICNet(num_classes=19, fold_bn=True).apply({"params": folded_params(folded)}, x)
    assert_logits_close(ours, reference)


def test_errors_name_every_missing_extra_and_misshaped_tensor(tmp_path):
    released = random_release()
    del released["conv3_1_1x1_reduce/weights"]
    del released["conv5_4_k1/biases"]
    released["conv_sub4/weights"] = released["conv_sub4/weights"][:, :, :, :64]
    released["conv6_cls/biases"] = np.zeros(20, np.float32)
    released["conv9_extra/weights"] = np.zeros((1, 1, 2, 2), np.float32)
    np.save(tmp_path / "bad.npy", nest(released), allow_pickle=True)
    with pytest.raises(ValueError) as error:
        release.release_variables(release.load_release(tmp_path / "bad.npy"), template())
    message = str(error.value)
    for name in (
        "conv3_1_1x1_reduce/weights",
        "conv5_4_k1/biases",
        "conv_sub4/weights",
        "conv6_cls/biases",
        "conv9_extra/weights",
    ):
        assert name in message, message
    assert "missing" in message and "unexpected" in message and "wrong shape" in message
    assert "\n" not in message and isinstance(error.value, errors.UserError)
    # nothing is written on error
    with pytest.raises(ValueError):
        release.convert(tmp_path / "bad.npy", tmp_path / "out", cityscapes.get_config())
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_wrong_files_are_named_in_one_line(tmp_path):
    def error_of(path) -> str:
        with pytest.raises(release.WeightsError) as error:
            release.load_release(path)
        assert isinstance(error.value, errors.UserError) and "\n" not in str(error.value)
        return str(error.value)

    (tmp_path / "random.npy").write_bytes(np.random.default_rng(0).bytes(1000))
    assert "neither a NumPy .npy/.npz file" in error_of(tmp_path / "random.npy")
    (tmp_path / "weights.txt").write_text("conv1_1_3x3_s2/weights 1 2 3\n")
    assert "nor a TensorFlow checkpoint" in error_of(tmp_path / "weights.txt")
    assert "no such file" in error_of(tmp_path / "absent.npy")
    np.save(tmp_path / "array.npy", np.zeros((3, 4)))
    assert "not the pickled dict" in error_of(tmp_path / "array.npy")
    pickled_list = np.empty((), object)
    pickled_list[()] = [1, 2]
    np.save(tmp_path / "list.npy", pickled_list, allow_pickle=True)
    assert "not a readable NumPy weights file" in error_of(tmp_path / "list.npy")
    (tmp_path / "model.ckpt.index").write_bytes(b"\0" * 100)
    assert "not a readable TensorFlow checkpoint" in error_of(tmp_path / "model.ckpt")
    (tmp_path / "empty").mkdir()
    assert "found 0" in error_of(tmp_path / "empty")


def test_classifier_with_other_classes_names_the_count_and_the_flag():
    released = random_release()
    with pytest.raises(release.WeightsError, match="no 4-d tensor conv6_cls/weights"):
        release.infer_release_geometry(
            {k: v for k, v in released.items() if "conv6_cls" not in k}, 19
        )
    cut = {**released, "conv6_cls/weights": released["conv6_cls/weights"][..., :11]}
    with pytest.raises(release.WeightsError, match=r"weights has 11 classes but conv6_cls/biases"):
        release.infer_release_geometry(cut, 19)
    cut["conv6_cls/biases"] = released["conv6_cls/biases"][:11]
    config = cityscapes.get_config()
    with pytest.raises(release.WeightsError) as error:
        release.infer_release_geometry(cut, release.expected_classes(config))
    assert "has 11 classes where the config says 19" in str(error.value)
    assert "--num_classes=11" in str(error.value)
    assert release.infer_release_geometry(cut, release.expected_classes(config, 11)) == (0.5, 11)
    config.dataset.name = "custom"  # no fixed number of classes: the file's
    assert release.infer_release_geometry(cut, release.expected_classes(config)) == (0.5, 11)


def run_tool(tmp_path, *args) -> subprocess.CompletedProcess:
    """The converter's command line, run from outside the repository."""
    env = {**os.environ, "PYTHONPATH": str(scripts.REPO)}
    return scripts.run("-m", "icnet_jax.tools.convert_weights", *args, env=env, cwd=tmp_path)


def test_command_line_errors_are_one_line_with_status_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not weights\n")
    result = run_tool(tmp_path, "--input=notes.txt", "--output=out")
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: notes.txt: neither a NumPy .npy/.npz file (it does not start with their magic "
        "bytes) nor a TensorFlow checkpoint (no .index file)"
    ]
    released = random_release()
    released["conv6_cls/weights"] = released["conv6_cls/weights"][..., :11]
    released["conv6_cls/biases"] = released["conv6_cls/biases"][:11]
    np.save(tmp_path / "cut.npy", nest(released), allow_pickle=True)
    result = run_tool(tmp_path, "--input=cut.npy", "--output=out")
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "11 classes where the config says 19" in lines[0], lines
    assert not (tmp_path / "out").exists()


class _System:
    """Pickles as `os.system(command)`."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_converting_a_crafted_npy_runs_nothing(tmp_path):
    marker = tmp_path / "written_by_the_pickle"
    crafted = np.empty((), object)
    crafted[()] = {"conv1_sub1": {"weights": _System(f"touch {marker}")}}
    np.save(tmp_path / "evil.npy", crafted, allow_pickle=True)
    result = run_tool(tmp_path, "--input=evil.npy", "--output=out")
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: evil.npy: refused to unpickle {os.system.__module__}.system: a weights .npy "
        "holds only arrays and containers of them, and this file would run code when loaded"
    ]
    assert not marker.exists() and not (tmp_path / "out").exists()
