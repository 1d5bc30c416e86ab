"""Reading the files tf_keras (Keras 2) writes, with h5py and zipfile only.

Three formats:

- `model.save_weights("w.h5")`: the root lists `layer_names`; each layer's
  group lists its `weight_names` in the layer's order.
- `model.save("m.h5")`: the same under `model_weights`, and the model's
  config as JSON in the `model_config` attribute.
- `model.save("m.keras")`: a zip of `config.json` and `model.weights.h5`,
  whose `layers/<name>/vars/<i>` hold each layer's variables by position
  (no names).
"""

import io
import json
import os
import re
import zipfile

import numpy as np

from keras_bayes import _validation

MODEL_CLASSES = ("Sequential", "Functional", "Model")


class SavedLayer:
    """One layer as a file stores it.

    Attributes:
        name: the layer's name in the file.
        weights: list of `(name, array)` in the layer's order; `name` is the
            variable's base name (`"kernel_posterior_loc"`) or None where
            the format stores none (`.keras`).
        class_name: the layer's class from the model config, or None.
        module: the module of that class, or None.
        config: the layer's config dict, or None.
    """

    def __init__(self, name, weights, class_name=None, module=None):
        self.name = name
        self.weights = weights
        self.class_name = class_name
        self.module = module
        self.config = None


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _attribute(group, name):
    """An attribute that tf_keras may have split into `name0`, `name1`..."""
    if name in group.attrs:
        values = group.attrs[name]
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [_text(value) for value in np.asarray(values).reshape(-1)]


def _base_name(weight_name):
    """`"conv2d/kernel:0"` -> `"kernel"`."""
    return weight_name.split("/")[-1].split(":")[0]


def _snake_case(class_name):
    """A class name as tf_keras writes it in files: `conv2d_flipout`."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def model_layers(config):
    """The layer entries of a Sequential / Functional model config."""
    if not isinstance(config, dict) or config.get("class_name") not in (
        MODEL_CLASSES
    ):
        found = config.get("class_name") if isinstance(config, dict) else None
        raise ValueError(
            "The file holds a model of class "
            f"{found!r}; only Sequential and Functional models can be read "
            "(a subclassed model has no config to rebuild from)."
        )
    return config["config"]["layers"]


def _read_h5_layers(root):
    layers = []
    for name in _attribute(root, "layer_names"):
        group = root[name]
        weights = [
            (_base_name(weight), np.asarray(group[weight]))
            for weight in _attribute(group, "weight_names")
        ]
        layers.append(SavedLayer(name, weights))
    return layers


def _read_h5(filepath):
    import h5py

    with h5py.File(filepath, "r") as file:
        if "model_weights" in file:
            config = json.loads(_text(file.attrs["model_config"]))
            return config, _read_h5_layers(file["model_weights"])
        if "layer_names" in file.attrs or "layer_names0" in file.attrs:
            return None, _read_h5_layers(file)
    raise ValueError(
        f"The HDF5 file {filepath!r} is neither a tf_keras weights file "
        "(`save_weights`) nor a whole tf_keras model (`save`)."
    )


def _read_keras_zip(filepath):
    import h5py

    with zipfile.ZipFile(filepath) as archive:
        names = archive.namelist()
        if "config.json" not in names or "model.weights.h5" not in names:
            raise ValueError(
                f"The archive {filepath!r} lacks config.json or "
                "model.weights.h5: it is not a `.keras` model file."
            )
        config = json.loads(archive.read("config.json"))
        weights_bytes = archive.read("model.weights.h5")
    # The archive names a layer's group after its class, not its name:
    # `layers/dense`, `layers/dense_1`, ... in the order of the layers.
    layers, used = [], {}
    with h5py.File(io.BytesIO(weights_bytes), "r") as file:
        for entry in model_layers(config):
            name = entry["config"]["name"]
            key = _snake_case(entry["class_name"])
            used[key] = used.get(key, -1) + 1
            path = f"layers/{key}_{used[key]}" if used[key] else f"layers/{key}"
            group = file[path] if path in file else None
            if group is not None and "layers" in group:
                raise ValueError(
                    f"Layer '{name}' is a nested model or a layer with "
                    "sublayers; only flat Sequential / Functional models "
                    "can be read."
                )
            variables = group["vars"] if group is not None else {}
            weights = [
                (None, np.asarray(variables[str(i)]))
                for i in range(len(variables))
            ]
            layers.append(SavedLayer(name, weights))
    return config, layers


def read_tf_keras(filepath):
    """`(model_config or None, [SavedLayer])` of a tf_keras file.

    Args:
        filepath: a `*.h5` weights or model file, or a `*.keras` file.
    """
    if not isinstance(filepath, (str, os.PathLike)):
        raise _validation.invalid(
            "filepath",
            "Expected the path of a `.h5` or `.keras` file.",
            filepath,
        )
    path = os.fspath(filepath)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    if zipfile.is_zipfile(path):
        config, layers = _read_keras_zip(path)
    else:
        with open(path, "rb") as file:
            signature = file.read(8)
        if signature != b"\x89HDF\r\n\x1a\n":
            raise ValueError(
                f"{path!r} is neither an HDF5 file nor a `.keras` archive. "
                "A TensorFlow checkpoint (`save_weights('ckpt')`) cannot be "
                "read without TensorFlow: save the tf_keras model again "
                "with `model.save_weights('weights.h5')` or "
                "`model.save('model.keras')`."
            )
        config, layers = _read_h5(path)
    if config is not None:
        entries = {
            entry["config"]["name"]: entry for entry in model_layers(config)
        }
        for layer in layers:
            entry = entries.get(layer.name)
            if entry is not None:
                layer.class_name = entry.get("class_name")
                layer.module = entry.get("module")
                layer.config = entry.get("config")
    return config, layers
