"""Skip what Keras' own layer cannot run on this backend and device.

TensorFlow picks its CPU convolution kernels by processor. With oneDNN's
kernels (Intel CPUs by default) it runs channels_first convolutions and
dilated transposed convolutions; without them (AMD CPUs, or
`TF_ENABLE_ONEDNN_OPTS=0`) it refuses them, e.g. "The Conv2D op currently
only supports the NHWC tensor format on the CPU". A test of such a
configuration measures the device, not keras-bayes.

`skip_unless_keras_runs` decides at run time, by running the matching
`keras.layers` layer on the test's own configuration, input shape and
dtype: if Keras' layer fails, the test is skipped with the backend's
message. It never runs a keras-bayes layer, so a skip cannot hide a
keras-bayes defect: where Keras' layer runs, the test runs.
"""

import functools
import re

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

# The arguments that Keras' convolution and dense layers share with ours.
_KERAS_ARGUMENTS = (
    "filters",
    "units",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
    "output_padding",
    "depth_multiplier",
    "use_bias",
    "equation",
    "output_shape",
    "bias_axes",
)


def keras_arguments(kwargs):
    """The subset of a keras-bayes layer's kwargs that Keras' layer takes."""
    return {k: v for k, v in kwargs.items() if k in _KERAS_ARGUMENTS}


def _device():
    try:
        devices = keras.distribution.list_devices()
    except Exception:  # a backend without the query: say so, do not fail
        return "unknown device"
    return devices[0] if devices else "unknown device"


def _backend_message(error):
    """The backend's own sentence, without Keras' wrapping and colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    match = re.search(r"\}\}\s*(.+?)(?:\s*\[Op:|$)", text, re.MULTILINE)
    if match:
        return match.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@functools.cache
def _failure(class_name, arguments, input_shape, dtype, fit):
    layer_cls = getattr(keras.layers, class_name)
    x = np.full(input_shape, 0.5, dtype="float32")
    try:
        layer = layer_cls(**dict(arguments), dtype=dtype)
        if fit:
            model = keras.Sequential([keras.Input(input_shape[1:]), layer])
            model.compile(optimizer="sgd", loss="mse")
            # The shape of a real output: Keras' symbolic shape may leave
            # axes unknown (`EinsumDense` with None in `output_shape`).
            y = keras.ops.convert_to_numpy(model(x)) * 0.0
            model.train_on_batch(x, y)
        else:
            keras.ops.convert_to_numpy(layer(x))
    except Exception as error:  # any refusal of the backend counts
        return _backend_message(error)
    return None


def skip_unless_keras_runs(
    keras_cls, kwargs, input_shape, dtype="float32", fit=False
):
    """Skip the calling test if `keras_cls(**kwargs)` fails here.

    Args:
        keras_cls: the matching `keras.layers` class.
        kwargs: the test layer's arguments; those Keras' layer does not
            take (priors, `batch_shape`, ...) are left out.
        input_shape: the input shape of one member, batch axis included.
        dtype: the layer dtype policy to try, e.g. `"mixed_float16"`.
        fit: also run one training step (the gradients' kernels differ).
    """
    arguments = tuple(sorted(keras_arguments(kwargs).items()))
    message = _failure(
        keras_cls.__name__, arguments, tuple(input_shape), dtype, fit
    )
    if message is not None:
        described = ", ".join(f"{k}={v!r}" for k, v in arguments)
        pytest.skip(
            f"keras.layers.{keras_cls.__name__}({described}) cannot run on "
            f"{BACKEND} ({_device()}, dtype {dtype}) here: {message}"
        )


def skip_unless_model_runs(model, x):
    """Skip the calling test if a model of Keras layers fails on `x` here."""
    try:
        keras.ops.convert_to_numpy(model(x))
    except Exception as error:  # any refusal of the backend counts
        pytest.skip(
            f"the Keras model cannot run on {BACKEND} ({_device()}) here: "
            f"{_backend_message(error)}"
        )
