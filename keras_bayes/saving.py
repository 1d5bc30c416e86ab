"""Loading `.keras` files with clear errors for damaged files.

Two layers of protection:

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
