"""`MemberAverage`: the ensemble's prediction from its members' outputs."""

import keras
from keras import ops

from keras_bayes import _validation
from keras_bayes._export import register


@register
class MemberAverage(keras.layers.Layer):
    """Average over the member axes of a layer with `batch_shape`.

    Put it after the activation that makes the members' outputs comparable
    (e.g. `keras.layers.Softmax()`): an ensemble predicts the mean of its
    members' probabilities.

    Args:
        num_member_axes: how many member axes follow the batch axis (the
            length of `batch_shape`). Defaults to 1.

    Input shape:
        `(batch, *batch_shape, ...)`.

    Output shape:
        `(batch, ...)`.

    Example:

    >>> probs = keras.Sequential([
    ...     keras.Input((32,)),
    ...     kb.layers.DenseRank1(10, batch_shape=(4,)),
    ...     keras.layers.Softmax(),
    ...     kb.layers.MemberAverage(),
    ... ])
    >>> probs(np.zeros((2, 32))).shape
    (2, 10)
    """

    def __init__(self, num_member_axes=1, **kwargs):
        super().__init__(**kwargs)
        self.num_member_axes = _validation.positive_int(
            num_member_axes, "num_member_axes"
        )

    def call(self, inputs):
        axes = tuple(range(1, 1 + self.num_member_axes))
        return ops.mean(inputs, axis=axes)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2 + self.num_member_axes:
            raise ValueError(
                f"Input 0 of layer '{self.name}' is incompatible with the "
                f"layer: expected ndim >= {2 + self.num_member_axes} (batch, "
                f"{self.num_member_axes} member axes, features), found "
                f"ndim={len(input_shape)}. Full shape received: {input_shape}"
            )
        return input_shape[:1] + input_shape[1 + self.num_member_axes :]

    def get_config(self):
        config = super().get_config()
        config["num_member_axes"] = self.num_member_axes
        return config
