"""`DenseMap`: `inputs @ kernel` over the last axis."""

from keras import ops

from keras_bayes import _validation
from keras_bayes.layers.maps.base import LinearMap


class DenseMap(LinearMap):
    """A dense map. Kernel layout: `(in_features, units)`.

    Takes the maps' common constructor arguments; `rank` is unused and
    `arguments` holds `units`.

    Without `batch_shape` the inputs may have any rank >= 2; with it,
    inputs are `(batch, in_features)` (fed to every member) or
    `(batch, *batch_shape, in_features)`.
    """

    kernel_ndim = 2

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        self.units = _validation.positive_int(arguments["units"], "units")
        if batch_shape:
            self.member_ndim = 2
        super().__init__(batch_shape, layer_name)

    def get_config(self):
        return {"units": self.units}

    def output_channels(self, in_channels):
        return self.units

    def member_kernel_shape(self, in_channels):
        return (in_channels, self.units)

    def _member_input_channels(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"Input 0 of layer '{self.layer_name}' is incompatible with "
                "the layer: expected min_ndim=2, found "
                f"ndim={len(input_shape)}. Full shape received: "
                f"{tuple(input_shape)}"
            )
        if input_shape[-1] is None:
            raise ValueError(
                "The last dimension of the inputs of layer "
                f"'{self.layer_name}' should be defined. Found None. Full "
                f"shape received: {tuple(input_shape)}"
            )
        return input_shape[-1]

    def _member_output_shape(self, input_shape):
        self._member_input_channels(input_shape)
        return tuple(input_shape)[:-1] + (self.units,)

    def _apply(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def _apply_broadcast(self, inputs, kernel):
        return ops.einsum("ni,bio->nbo", inputs, kernel)

    def _apply_members(self, inputs, kernel):
        return ops.einsum("nbi,bio->nbo", inputs, kernel)
