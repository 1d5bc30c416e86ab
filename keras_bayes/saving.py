"""Saving and loading: the layers' checkpoint path, and `.keras` files
with clear errors for damaged files.

Every keras-bayes layer saves its variables by name, each with a CRC32
checksum (`save_variables` / `load_variables`), so that adding a variable
in a later version does not shift every saved value, and damaged bytes
fail to load instead of loading silently.

Two layers of protection against damaged files:

- `load_model` checks the archive before Keras reads it: a missing,
  truncated or corrupted file, or one that lacks a part of a `.keras`
  archive, is refused with an error that says which, instead of Keras'
  "File not found" for a truncated file.
- The Bayesian layers store a CRC32 checksum next to each of their
  variables and verify it on loading, so that damaged weight bytes inside an
  otherwise valid archive fail loudly even through
  `keras.saving.load_model` (a `ValueError` naming the layer and the
  variable) rather than loading wrong weights. Files saved without
  checksums still load.
"""

import os
import zipfile
import zlib

import keras
import numpy as np

# The members every `.keras` archive written by Keras 3 contains.
REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
# A variable's checksum is stored under the variable's name plus this.
CHECKSUM_SUFFIX = ".crc32"


def checksum(value):
    """CRC32 of an array's bytes (little-endian, C order) as a uint32 array.

    Args:
        value: a NumPy array.
    """
    array = np.asarray(value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    crc = zlib.crc32(np.ascontiguousarray(array).tobytes())
    return np.asarray(crc, dtype="uint32")


def verify_checksum(layer_name, variable_name, value, expected):
    """Raise a `ValueError` if `value` does not match its stored checksum."""
    expected = int(np.asarray(expected))
    actual = int(checksum(value))
    if actual != expected:
        raise ValueError(
            f"Layer '{layer_name}' cannot load variable '{variable_name}': "
            f"its saved values fail their CRC32 check (stored "
            f"{expected:#010x}, computed {actual:#010x}). The weights file "
            "is corrupted; restore it from a backup or save the model again."
        )


def _own_variables(layer):
    return layer._trainable_variables + layer._non_trainable_variables


def save_variables(layer, store):
    """Write a layer's own variables into a Keras weights `store` by name."""
    for variable in _own_variables(layer):
        value = keras.ops.convert_to_numpy(variable)
        store[variable.name] = value
        store[variable.name + CHECKSUM_SUFFIX] = checksum(value)


def load_variables(layer, store, optional=()):
    """Assign a layer's own variables from a Keras weights `store`.

    Reads the by-name layout of `save_variables` (checksums verified where
    present: files saved before checksums existed have none) and Keras'
    positional layout (`"0"`, `"1"`, ... in the order of the variables,
    with or without the `optional` ones, which files saved before they
    existed lack). Nothing is assigned unless every variable matches.

    Args:
        layer: the layer to load.
        store: a mapping of saved names to arrays.
        optional: names of variables that may be missing from the store
            (they keep their current values).
    """
    own = _own_variables(layer)
    stored = set(store.keys())
    keys = [key for key in stored if not key.endswith(CHECKSUM_SUFFIX)]
    if keys and all(key.isdigit() for key in keys):
        required = [v for v in own if v.name not in optional]
        layout = own if len(keys) == len(own) else required
        if sorted(keys, key=int) != [str(i) for i in range(len(layout))]:
            raise ValueError(
                f"Layer '{layer.name}' expected {len(own)} saved "
                f"variables (or {len(required)} without "
                f"{list(optional)}), found {len(keys)}."
            )
        values = {layout[int(key)].name: store[key] for key in keys}
    else:
        values = {key: store[key] for key in keys}
        for name, value in values.items():
            if name + CHECKSUM_SUFFIX in stored:
                verify_checksum(
                    layer.name, name, value, store[name + CHECKSUM_SUFFIX]
                )
    names = {variable.name for variable in own}
    missing = sorted(n for n in names - set(values) if n not in optional)
    unexpected = sorted(set(values) - names)
    if missing or unexpected:
        raise ValueError(
            f"Layer '{layer.name}' cannot load the saved weights: "
            f"missing {missing}, unexpected {unexpected}. The saved "
            "layer had different posteriors or `use_bias`."
        )
    for variable in own:
        if variable.name in values:
            variable.assign(values[variable.name])


def check_file(filepath):
    """Check that `filepath` is a complete, uncorrupted `.keras` archive.

    Reads the whole archive once and verifies the CRC of every member,
    which catches truncation and damaged bytes anywhere in the file.

    Args:
        filepath: path of a `.keras` file.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is truncated, is not a zip archive,
            fails a CRC check, or lacks `config.json` or
            `model.weights.h5`.
    """
    filepath = os.fspath(filepath)
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"No such `.keras` file: {filepath}")
    if not zipfile.is_zipfile(filepath):
        raise ValueError(
            f"{filepath} is truncated or not a .keras file: it is not a "
            "complete zip archive."
        )
    try:
        with zipfile.ZipFile(filepath) as archive:
            bad_member = archive.testzip()
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise ValueError(
            f"{filepath} is corrupted: its zip structure cannot be read "
            f"({error})."
        ) from error
    if bad_member is not None:
        raise ValueError(
            f"{filepath} is corrupted: member {bad_member} fails its CRC check."
        )
    missing = [name for name in REQUIRED_MEMBERS if name not in names]
    if missing:
        raise ValueError(
            f"{filepath} is not a complete .keras file: it lacks "
            f"{', '.join(missing)}."
        )


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """`keras.saving.load_model` for `.keras` files, checked first.

    The archive is checked with `check_file`, so that a truncated or
    corrupted file is reported as such; then Keras loads it. Other inputs
    (a directory, a file object, a remote path) go to Keras unchecked.

    Args:
        filepath: path of a `.keras` file.
        custom_objects, compile, safe_mode: as in
            `keras.saving.load_model`.

    Example:

    >>> model.save("bayesian_cnn.keras")
    >>> restored = kb.saving.load_model("bayesian_cnn.keras")
    """
    if isinstance(filepath, (str, os.PathLike)):
        path = os.fspath(filepath)
        if "://" not in path and not os.path.isdir(path):
            check_file(path)
    return keras.saving.load_model(
        filepath,
        custom_objects=custom_objects,
        compile=compile,
        safe_mode=safe_mode,
    )
