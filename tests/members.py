"""Checks of layers with members (`batch_shape`) against Keras' layers.

Every member must compute what the plain Keras layer with that member's
weights computes, for an input shared by all members `(N, *spatial, C)`
and for one input per member `(N, *batch_shape, *spatial, C)`.
"""

import numpy as np

from tests.helpers import to_numpy
from tests.keras_support import skip_unless_keras_runs

# float32 sums of a few dozen O(1) products on both sides.
RTOL = 1e-5
ATOL = 1e-5
# Non-square spatial sizes, so that a swapped axis changes the shape.
SPATIAL = (5, 4, 3)


def input_shapes(rank, channels, data_format, batch_shape):
    """`(shared input shape, per-member input shape)`, batch of 2."""
    spatial = SPATIAL[:rank]
    if data_format == "channels_first":
        member = (channels, *spatial)
    else:
        member = (*spatial, channels)
    return (2, *member), (2, *batch_shape, *member)


def _member(array, index):
    return array[(slice(None),) + index]


def check_members(layer, reference_cls, kwargs, x, x_members, weights):
    """Each member of `layer` equals `reference_cls` with its weights.

    `weights(index)` gives a member's Keras weights. In channels_first cases
    the last output spatial size differs from `filters`: for those shapes
    `keras.ops.add` on TensorFlow would add the reference's bias along the
    last axis.
    """
    skip_unless_keras_runs(reference_cls, kwargs, x.shape)
    shared = to_numpy(layer(x))
    per_member = to_numpy(layer(x_members))
    batch_shape = layer.batch_shape
    assert shared.shape == tuple(layer.compute_output_shape(x.shape))
    assert per_member.shape == tuple(
        layer.compute_output_shape(x_members.shape)
    )
    for index in np.ndindex(*batch_shape):
        reference = reference_cls(**kwargs)
        reference.build(x.shape)
        reference.set_weights(weights(index))
        expected = to_numpy(reference(x))
        if kwargs.get("data_format") == "channels_first" and kwargs.get(
            "use_bias", True
        ):
            assert expected.shape[-1] != kwargs["filters"], "ambiguous bias"
        np.testing.assert_allclose(
            _member(shared, index), expected, rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(
            _member(per_member, index),
            to_numpy(reference(_member(x_members, index))),
            rtol=RTOL,
            atol=ATOL,
        )
    # Members differ (a broadcast of member 0 would pass the shape checks).
    assert not np.allclose(
        _member(shared, (0,) * len(batch_shape)),
        _member(shared, (1,) + (0,) * (len(batch_shape) - 1)),
    )
