"""Damaged and old `.keras` files: clear errors, nothing loaded silently.

- `kb.saving.load_model` refuses a missing, truncated, corrupted or
  incomplete archive with an error saying which;
- damaged weight bytes inside an otherwise valid archive (valid zip CRCs)
  are caught by the layers' own checksums, through plain
  `keras.saving.load_model` too, naming the layer and the variable;
- files without checksums still load;
- the committed legacy fixture (positional weights, no control variables,
  no `batch_shape` in the configs; see `fixtures/make_legacy_fixture.py`)
  loads and gives its expected outputs on every backend.
"""

import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.fixtures import make_legacy_fixture
from tests.helpers import to_numpy

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Keras' own loader (the layers' checks) and ours (the archive's as well).
LOADERS = [
    pytest.param(keras.saving.load_model, id="keras_load_model"),
    pytest.param(kb.saving.load_model, id="kb_load_model"),
]
LAYER_PATH = "layers/conv2d_flipout/vars"


def _model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            kb.layers.Conv2DFlipout(2, 3, name="conv", seed=3),
            keras.layers.Flatten(),
            kb.layers.DenseReparameterization(2, name="head", seed=4),
        ]
    )


@pytest.fixture
def saved(tmp_path):
    """A saved model and its path."""
    model = _model()
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {
            info.filename: archive.read(info) for info in archive.infolist()
        }


def _write_archive(path, members):
    """A valid zip (fresh CRCs) with the given member bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _rewrite_weights(path, edit):
    """Apply `edit(h5_file)` to the weights of a `.keras` file, in place."""
    members = _members(path)
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        edit(h5)
    members["model.weights.h5"] = buffer.getvalue()
    _write_archive(path, members)


def _flip_data_bytes(h5_bytes, dataset_path):
    """Flip the bytes of a dataset's raw data, leaving the HDF5 structure
    (and so the file's readability) intact."""
    with h5py.File(io.BytesIO(h5_bytes), "r") as h5:
        dataset = h5[dataset_path]
        offset = dataset.id.get_offset()
        size = dataset.id.get_storage_size()
    assert offset is not None and size > 0, "expected contiguous storage"
    data = bytearray(h5_bytes)
    for i in range(offset, offset + size, 4):
        data[i] ^= 0x01  # lowest mantissa byte of each float32
    return bytes(data)


def _member_data_offset(path, name):
    """Offset of a stored member's data in the archive file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = Path(path).read_bytes()
    header = raw[info.header_offset : info.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info


# -- archive checks ---------------------------------------------------------


def test_missing_file_is_reported(tmp_path):
    path = tmp_path / "absent.keras"
    with pytest.raises(FileNotFoundError, match="No such `.keras` file: .*"):
        kb.saving.load_model(path)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_truncated_file_is_reported(saved, fraction):
    _, path = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(
        ValueError,
        match=r"model\.keras is truncated or not a \.keras file: it is not a "
        r"complete zip archive\.",
    ):
        kb.saving.load_model(path)


def test_file_that_is_not_a_zip_is_reported(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="is truncated or not a .keras file"):
        kb.saving.load_model(path)


def test_corrupted_member_is_reported(saved):
    _, path = saved
    offset, info = _member_data_offset(path, "model.weights.h5")
    assert info.compress_type == zipfile.ZIP_STORED
    raw = bytearray(path.read_bytes())
    # Well inside the member's data, away from the zip structures.
    raw[offset + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(
        ValueError,
        match=r"model\.keras is corrupted: member model\.weights\.h5 fails "
        r"its CRC check\.",
    ):
        kb.saving.load_model(path)


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_archive_without_a_required_member_is_reported(saved, member):
    _, path = saved
    members = _members(path)
    del members[member]
    _write_archive(path, members)
    with pytest.raises(
        ValueError,
        match=r"model\.keras is not a complete \.keras file: it lacks "
        + re.escape(member)
        + r"\.",
    ):
        kb.saving.load_model(path)


# -- checksums of the variables ---------------------------------------------


@pytest.mark.parametrize(
    "variable", ["kernel_loc", "kernel_untransformed_scale", "bias_loc"]
)
@pytest.mark.parametrize("loader", LOADERS)
def test_corrupted_weight_bytes_fail_their_checksum(saved, variable, loader):
    model, path = saved
    members = _members(path)
    dataset = f"{LAYER_PATH}/{variable}"
    members["model.weights.h5"] = _flip_data_bytes(
        members["model.weights.h5"], dataset
    )
    _write_archive(path, members)
    # The damage is invisible to zip and HDF5: the archive passes every
    # CRC check and the dataset reads, with other values than saved.
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h5:
            damaged = h5[dataset][()]
    saved_value = to_numpy(getattr(model.get_layer("conv"), variable))
    assert damaged.shape == saved_value.shape
    assert np.all(damaged != saved_value)

    with pytest.raises(
        ValueError,
        match=rf"Layer 'conv' cannot load variable '{variable}': its saved "
        r"values fail their CRC32 check \(stored 0x[0-9a-f]{8}, computed "
        r"0x[0-9a-f]{8}\)\. The weights file is corrupted",
    ):
        loader(path)


def test_file_without_checksums_still_loads(saved):
    model, path = saved

    def drop_checksums(h5):
        for layer in ("conv2d_flipout", "dense_reparameterization"):
            group = h5[f"layers/{layer}/vars"]
            for key in [k for k in group if k.endswith(".crc32")]:
                del group[key]

    _rewrite_weights(path, drop_checksums)
    restored = kb.saving.load_model(path)
    for saved_var, restored_var in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(
            to_numpy(restored_var), to_numpy(saved_var)
        )


ORDER = [
    "kernel_loc",
    "kernel_untransformed_scale",
    "bias_loc",
    "kl_weight",
    "posterior_sample",
]


def _make_positional(names):
    """An edit turning the conv layer's variables into Keras' positional
    layout (`"0"`, `"1"`, ...) of `names`, without checksums."""

    def edit(h5):
        group = h5[LAYER_PATH]
        values = [group[name][()] for name in names]
        for key in list(group):
            del group[key]
        for index, value in enumerate(values):
            group[str(index)] = value

    return edit


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(5, id="with_control_variables"),
        pytest.param(3, id="without_control_variables"),
    ],
)
def test_positional_layout_loads(saved, count):
    model, path = saved
    conv = model.get_layer("conv")
    conv.kl_weight = 0.5
    model.save(path)
    _rewrite_weights(path, _make_positional(ORDER[:count]))
    restored = kb.saving.load_model(path).get_layer("conv")
    for name in ORDER[:3]:
        np.testing.assert_array_equal(
            to_numpy(getattr(restored, name)), to_numpy(getattr(conv, name))
        )
    # From the control variable, or without it from the config, which
    # records the value at saving time.
    assert restored.kl_weight == 0.5


def test_positional_layout_with_a_wrong_count_is_refused(saved):
    _, path = saved
    _rewrite_weights(path, _make_positional(ORDER[:4]))
    with pytest.raises(
        ValueError,
        match=r"Layer 'conv' expected 5 saved variables \(or 3 without "
        r"\['kl_weight', 'posterior_sample'\]\), found 4\.",
    ):
        keras.saving.load_model(path)


def test_checksums_are_crc32_of_the_saved_bytes(saved):
    # Recomputed independently of the code under test: zlib over the bytes
    # as HDF5 holds them.
    _, path = saved
    with h5py.File(io.BytesIO(_members(path)["model.weights.h5"])) as h5:
        group = h5[LAYER_PATH]
        names = sorted(k for k in group if not k.endswith(".crc32"))
        assert names == sorted(
            [
                "kernel_loc",
                "kernel_untransformed_scale",
                "bias_loc",
                "kl_weight",
                "posterior_sample",
            ]
        )
        for name in names:
            value = np.ascontiguousarray(group[name][()])
            assert int(group[f"{name}.crc32"][()]) == zlib.crc32(
                value.astype(value.dtype.newbyteorder("<")).tobytes()
            )


def test_weights_only_files_are_checked_too(tmp_path):
    model = _model()
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as h5:
        dataset = h5[f"{LAYER_PATH}/kernel_loc"]
        dataset[...] = dataset[()] + 1.0
    with pytest.raises(ValueError, match="'kernel_loc': its saved values"):
        _model().load_weights(path)


# -- legacy layout ------------------------------------------------------------


def test_legacy_fixture_is_in_the_old_layout():
    members = _members(FIXTURES / "legacy_bayesian_cnn.keras")
    config = json.loads(members["config.json"])
    bayesian = [
        layer["config"]
        for layer in config["config"]["layers"]
        if (layer.get("registered_name") or "").startswith("keras_bayes>")
    ]
    assert len(bayesian) == 2
    assert all("batch_shape" not in layer for layer in bayesian)
    with h5py.File(io.BytesIO(members["model.weights.h5"])) as h5:
        assert sorted(h5["layers/conv2d_flipout/vars"]) == ["0", "1", "2"]
        assert sorted(h5["layers/dense_reparameterization/vars"]) == [
            "0",
            "1",
            "2",
            "3",
        ]


@pytest.mark.parametrize("loader", LOADERS)
def test_legacy_fixture_loads_with_its_outputs(loader):
    model = loader(FIXTURES / "legacy_bayesian_cnn.keras")
    conv, head = model.get_layer("conv"), model.get_layer("head")
    # Without control variables, the values come from the configs.
    assert conv.kl_weight == 0.25
    assert conv.posterior_value == "mean"
    assert head.kl_weight == 1.0
    assert head.posterior_value == "sample"
    assert conv.batch_shape == () and head.batch_shape == ()
    assert [v.name for v in head.trainable_weights] == [
        "kernel_loc",
        "kernel_untransformed_scale",
        "bias_loc",
        "bias_untransformed_scale",
    ]

    x = np.load(FIXTURES / "legacy_inputs.npy")
    expected = np.load(FIXTURES / "legacy_mean_outputs.npy")
    kb.set_posterior_value(model, "mean")
    # A float32 forward pass against a float64 NumPy reference: sums of at
    # most 18 O(1) products per output, rounding below 1e-5.
    np.testing.assert_allclose(
        to_numpy(model(x)), expected, rtol=1e-5, atol=1e-5
    )
    # Every positional value lands on its variable, the scales included
    # (they do not enter the mean-mode outputs).
    for layer, (_, values) in (
        (conv, make_legacy_fixture.weights()["conv2d_flipout"]),
        (head, make_legacy_fixture.weights()["dense_reparameterization"]),
    ):
        assert len(layer.trainable_weights) == len(values)
        for variable, value in zip(layer.trainable_weights, values):
            np.testing.assert_array_equal(to_numpy(variable), value)
