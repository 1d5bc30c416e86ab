"""Bayesian separable convolutions of rank 1 and 2: a depthwise kernel and
a pointwise kernel, each with a posterior."""

from keras_bayes.layers import _docs, estimators
from keras_bayes.layers.geometry import Geometry
from keras_bayes.layers.kernel import KernelLayer, bayesian_class
from keras_bayes.layers.maps import DepthwiseMap, PointwiseMap

ARGS_DOC = _docs.layer_doc(
    "",
    "        filters: number of output channels.\n"
    + _docs.geometry()
    + "        depth_multiplier: depthwise output channels per input "
    "channel.\n            Defaults to 1.\n"
    "        activation: activation applied to the outputs.\n"
    "        use_bias: whether the layer has a bias.\n"
    "        kernel_posterior, kernel_prior: as in `Conv2DFlipout`, for both "
    "the\n            depthwise and the pointwise kernel; the KL sums over "
    "both.\n"
    "        bias_posterior, bias_prior: as in `Conv2DFlipout`.\n"
    + _docs.CONTROL_ARGS,
    "\n    Posterior weights: `depthwise_kernel` (`kernel_size + "
    "(in_channels,\n    depth_multiplier)`) and `pointwise_kernel` (`(1,) * "
    "rank + (in_channels *\n    depth_multiplier, filters)`), each held in "
    "`<name>_loc` and the scale\n    variable of its posterior family; "
    "`bias_loc`; `batch_shape` in front.\n"
    + _docs.spatial_shapes("SeparableConvND"),
    """\
    >>> layer = kb.layers.SeparableConv2DFlipout(8, 3, padding="same")
    >>> layer(np.zeros((2, 16, 16, 3))).shape
    (2, 16, 16, 8)
""",
).lstrip()


class SeparableGeometry(Geometry):
    """`keras.layers.SeparableConvND`'s arguments; the attribute `rank`.

    Two maps: the depthwise convolution (`_map`) and the pointwise 1x1
    convolution (`_pointwise_map`).
    """

    map_class = DepthwiseMap
    exposed = (
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "depth_multiplier",
    )

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._finish(locals())
        pointwise = {"filters": filters, "data_format": self._map.data_format}
        self._pointwise_map = PointwiseMap(
            self.rank, pointwise, batch_shape, self.name
        )

    filters = property(lambda self: self._pointwise_map.filters)

    def compute_output_shape(self, input_shape):
        return self._pointwise_map.output_shape(
            self._map.output_shape(input_shape)
        )

    def get_config(self):
        config = super().get_config()
        config["filters"] = self.filters
        return config


class VariationalSeparableConv(SeparableGeometry, KernelLayer):
    """Base of the Bayesian separable convolutions; subclasses fix `rank`.

    Each stage runs the estimator: Flipout draws its signs per example and
    channel at the depthwise and at the pointwise stage.
    """

    def build_weights(self, input_shape):
        depthwise, pointwise = self._map, self._pointwise_map
        in_channels = depthwise.input_channels(input_shape)
        middle = depthwise.output_channels(in_channels)
        for name, linear_map, channels in (
            ("depthwise_kernel", depthwise, in_channels),
            ("pointwise_kernel", pointwise, middle),
        ):
            self.declare_weight(
                name,
                linear_map.kernel_shape(channels),
                self.kernel_posterior,
                self.kernel_prior,
            )
        self.declare_bias(pointwise, middle)
        self.input_spec = depthwise.input_spec(input_shape, in_channels)

    def compute_outputs(self, inputs, params, draws):
        estimator = self._estimator
        hidden = estimators.apply(
            estimator, self._map, inputs, params["depthwise_kernel"], draws
        )
        pointwise = self._pointwise_map
        outputs = estimators.apply(
            estimator, pointwise, hidden, params["pointwise_kernel"], draws
        )
        return self.add_bias(pointwise, outputs, params, draws)


REPARAMETERIZATION_DOC, FLIPOUT_DOC = _docs.estimator_summaries(
    "{rank}D separable convolution with weight posteriors",
    "Each stage (depthwise, then pointwise) is `map(x, loc) + s_out * "
    "map(x * s_in, scale * eps)`",
)


SeparableConv1DReparameterization = bayesian_class(
    "SeparableConv1DReparameterization",
    VariationalSeparableConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=1,
)


SeparableConv2DReparameterization = bayesian_class(
    "SeparableConv2DReparameterization",
    VariationalSeparableConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=2,
)


SeparableConv1DFlipout = bayesian_class(
    "SeparableConv1DFlipout",
    VariationalSeparableConv,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=1,
)


SeparableConv2DFlipout = bayesian_class(
    "SeparableConv2DFlipout",
    VariationalSeparableConv,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=2,
)
