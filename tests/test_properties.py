"""Property-based tests over the convolution hyper-parameters (hypothesis).

For configurations drawn across rank 1-3, kernel size, strides, dilation,
padding (causal included), groups, data_format, output_padding and
`batch_shape`, a Bayesian convolution (plain or transposed) must agree with
the matching `keras.layers.ConvND` / `ConvNDTranspose`:

- `compute_output_shape` equals Keras' `compute_output_shape` (member axes
  inserted after the batch axis), for known and unknown sizes, and both
  equal the shapes of real outputs; where Keras refuses an input (empty
  output), so does the layer;
- in mean mode, the outputs equal the Keras layer's with the same weights,
  member by member for a `batch_shape`.

The examples are derandomized, so CI draws the same configurations on every
run and backend.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import keras_bayes as kb
from tests.helpers import to_numpy
from tests.layer_test import BAYES_CONV, KERAS_CONV

# Largest spatial size per rank: small enough that a rank-3 example stays
# cheap, large enough for strides 3 with kernels of 3.
MAX_SIZE = {1: 9, 2: 6, 3: 4}

# Both sides sum at most 3**3 * 4 = 108 products of O(1) float32 numbers;
# with a `batch_shape` ours runs them in a merged convolution, in another
# order: a relative rounding difference of order sqrt(108) * 6e-8 ~ 1e-6.
RTOL = 1e-5
ATOL = 1e-5

# Reproducible in CI: the same derandomized examples on every run. Shape
# inference is cheap; a real call costs up to a few seconds on JAX, which
# compiles every op for every new shape, so fewer of those keep this file
# under a minute per backend.
_COMMON_SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SHAPE_SETTINGS = settings(max_examples=150, **_COMMON_SETTINGS)
CALL_SETTINGS = settings(max_examples=3, **_COMMON_SETTINGS)


@st.composite
def conv_configs(draw, rank=None, transpose=None):
    """A consistent convolution configuration and input shape; `rank` and
    `transpose` are drawn too unless given."""
    if transpose is None:
        transpose = draw(st.booleans())
    if rank is None:
        rank = draw(st.integers(1, 3))
    per_axis = st.lists(st.integers(1, 3), min_size=rank, max_size=rank)
    kernel_size = tuple(draw(per_axis))
    # Strides and dilation: never both greater than 1 (Keras refuses it).
    if draw(st.booleans()):
        strides, dilation_rate = tuple(draw(per_axis)), (1,) * rank
    else:
        strides = (1,) * rank
        dilation_rate = tuple(
            draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank))
        )
    paddings = ["valid", "same"]
    if rank == 1 and not transpose:
        paddings.append("causal")
    padding = draw(st.sampled_from(paddings))
    data_format = draw(st.sampled_from(["channels_last", "channels_first"]))
    if transpose:
        groups = 1
        filters = draw(st.integers(1, 4))
        in_channels = draw(st.integers(1, 4))
        output_padding = None
        if draw(st.booleans()):
            output_padding = tuple(
                draw(st.integers(0, stride - 1)) for stride in strides
            )
    else:
        groups = draw(st.integers(1, 3))
        filters = groups * draw(st.integers(1, 2))
        in_channels = groups * draw(st.integers(1, 2))
        output_padding = None
    spatial = tuple(
        draw(
            st.lists(
                st.integers(1, MAX_SIZE[rank]), min_size=rank, max_size=rank
            )
        )
    )
    batch_shape = draw(st.sampled_from([(), (2,), (1, 2)]))
    member_inputs = bool(batch_shape) and draw(st.booleans())
    batch = draw(st.integers(1, 2))
    use_bias = draw(st.booleans())
    flipout = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))

    kwargs = dict(
        filters=filters,
        kernel_size=kernel_size,
        strides=strides,
        padding=padding,
        data_format=data_format,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
    )
    if transpose:
        kwargs["output_padding"] = output_padding
    else:
        kwargs["groups"] = groups
    if data_format == "channels_last":
        member_shape = spatial + (in_channels,)
    else:
        member_shape = (in_channels,) + spatial
    input_shape = (
        (batch,) + (batch_shape if member_inputs else ()) + (member_shape)
    )
    return {
        "rank": rank,
        "transpose": transpose,
        "kwargs": kwargs,
        "batch_shape": batch_shape,
        "member_inputs": member_inputs,
        "member_input_shape": (batch,) + member_shape,
        "input_shape": input_shape,
        "flipout": flipout,
        "seed": seed,
    }


def _keras_layer(config):
    """The matching Keras layer and its output shape for one member's input;
    the shape is None where Keras refuses the input (an empty output)."""
    cls = KERAS_CONV[config["rank"], config["transpose"]]
    layer = cls(**config["kwargs"])
    try:
        shape = tuple(layer.compute_output_shape(config["member_input_shape"]))
    except ValueError:
        return layer, None
    if any(size is not None and size <= 0 for size in shape):
        return layer, None
    return layer, shape


def _keras_bias_is_ambiguous(config, shape):
    # `keras.ops.add` on TensorFlow guesses the layout of a bias of shape
    # (1, filters, 1, ...) from the last axis: with channels_first outputs
    # whose last spatial size equals `filters` it adds the bias along that
    # axis, so the Keras reference itself would be wrong. Such shapes are
    # left out of the value comparison instead of the whole data format.
    kwargs = config["kwargs"]
    return (
        kwargs["use_bias"]
        and kwargs["data_format"] == "channels_first"
        and shape[-1] == kwargs["filters"]
    )


def _bayes_layer(config, **extra):
    cls = BAYES_CONV[config["rank"], config["transpose"]][config["flipout"]]
    return cls(
        **config["kwargs"],
        batch_shape=config["batch_shape"],
        seed=config["seed"],
        **extra,
    )


def _with_members(shape, batch_shape):
    return shape[:1] + tuple(batch_shape) + shape[1:]


def _unknown_spatial(config, members=True):
    """The input shape with every spatial size unknown."""
    rank = config["rank"]
    shape = config["input_shape"] if members else config["member_input_shape"]
    if config["kwargs"]["data_format"] == "channels_last":
        return shape[: -1 - rank] + (None,) * rank + shape[-1:]
    return shape[:-rank] + (None,) * rank


@SHAPE_SETTINGS
@given(config=conv_configs())
def test_compute_output_shape_agrees_with_keras(config):
    keras_layer, keras_shape = _keras_layer(config)
    layer = _bayes_layer(config)
    if keras_shape is None:
        # Where Keras refuses the input, so do we.
        with pytest.raises(ValueError, match="too small"):
            layer.compute_output_shape(config["input_shape"])
        return
    expected = _with_members(keras_shape, config["batch_shape"])
    input_shape = config["input_shape"]
    assert tuple(layer.compute_output_shape(input_shape)) == expected
    # Unknown batch and spatial sizes stay unknown, as in Keras.
    unknown_batch = (None,) + input_shape[1:]
    assert tuple(layer.compute_output_shape(unknown_batch)) == (
        (None,) + expected[1:]
    )
    unknown_spatial = _unknown_spatial(config)
    assert tuple(layer.compute_output_shape(unknown_spatial)) == (
        _with_members(
            tuple(
                keras_layer.compute_output_shape(
                    _unknown_spatial(config, members=False)
                )
            ),
            config["batch_shape"],
        )
    )


# One case per layer family, so that each rank and kind gets its share of
# the few (expensive) examples.
@pytest.mark.parametrize(
    "rank,transpose",
    [pytest.param(*key, id=cls.__name__) for key, cls in KERAS_CONV.items()],
)
@CALL_SETTINGS
@given(data=st.data())
def test_mean_mode_equals_keras_layer(rank, transpose, data):
    config = data.draw(conv_configs(rank=rank, transpose=transpose))
    keras_layer, keras_shape = _keras_layer(config)
    assume(keras_shape is not None)
    assume(not _keras_bias_is_ambiguous(config, keras_shape))
    batch_shape = config["batch_shape"]
    rng = np.random.default_rng(config["seed"])
    x = rng.normal(size=config["input_shape"]).astype("float32")
    first_member = (slice(None),) + (0,) * len(batch_shape)
    try:
        keras_layer(x[first_member] if config["member_inputs"] else x)
    except Exception:
        # The Keras layer itself fails on this backend: TensorFlow's
        # transposed convolution refuses Keras' output length for "same"
        # padding with an even kernel and an explicit output_padding at
        # stride 1 (both layers call the same `keras.ops.conv_transpose`).
        assume(False)
    layer = _bayes_layer(
        config,
        posterior_value="mean",
        # A posterior draw would move the outputs by O(1): any sampling
        # leaking into mean mode shows far above the tolerance.
        kernel_posterior=kb.posteriors.MeanFieldNormal(
            untransformed_scale_initializer=keras.initializers.Constant(1.0)
        ),
    )
    layer.build(x.shape)
    kernel = rng.normal(size=layer.kernel_loc.shape).astype("float32")
    layer.kernel_loc.assign(kernel)
    if layer.use_bias:
        bias = rng.normal(size=layer.bias_loc.shape).astype("float32")
        layer.bias_loc.assign(bias)
    outputs = to_numpy(layer(x))
    # Mean mode runs the estimator's full graph (the noise is multiplied by
    # zero), so this is also the shape of a sampled output.
    assert outputs.shape == layer.compute_output_shape(x.shape)
    assert outputs.shape == _with_members(keras_shape, batch_shape)

    members = np.ndindex(*batch_shape) if batch_shape else [()]
    for member in members:
        weights = [kernel[member]]
        if layer.use_bias:
            weights.append(bias[member])
        keras_layer.set_weights(weights)
        member_x = x[(slice(None),) + member] if config["member_inputs"] else x
        expected = to_numpy(keras_layer(member_x))
        assert expected.shape == keras_shape
        np.testing.assert_allclose(
            outputs[(slice(None),) + member],
            expected,
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"member {member}",
        )
