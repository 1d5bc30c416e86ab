"""Bayesian depthwise convolutions of rank 1 and 2."""

from keras_bayes.layers import _docs
from keras_bayes.layers.geometry import DepthwiseGeometry
from keras_bayes.layers.kernel import KernelLayer, bayesian_class

ARGS_DOC = _docs.layer_doc(
    "",
    _docs.geometry()
    + "        depth_multiplier: output channels per input channel. "
    "Defaults to 1.\n"
    "        activation: activation applied to the outputs.\n"
    "        use_bias: whether the layer has a bias.\n"
    + _docs.BAYESIAN_ARGS
    + _docs.CONTROL_ARGS,
    "\n    Kernel layout is Keras': `kernel_size + (in_channels, "
    "depth_multiplier)`,\n    with `batch_shape` in front.\n"
    + _docs.spatial_shapes("DepthwiseConvND"),
    """\
    >>> layer = kb.layers.DepthwiseConv2DFlipout(3, depth_multiplier=2)
    >>> layer(np.zeros((2, 8, 8, 4))).shape
    (2, 6, 6, 8)
""",
).lstrip()

REPARAMETERIZATION_DOC, FLIPOUT_DOC = _docs.estimator_summaries(
    "{rank}D depthwise convolution with a weight posterior",
    "`y = depthwise(x, loc) + s_out * depthwise(x * s_in, scale * eps)`",
)


class VariationalDepthwiseConv(DepthwiseGeometry, KernelLayer):
    """Base of the Bayesian depthwise convolutions; subclasses fix `rank`."""


DepthwiseConv1DReparameterization = bayesian_class(
    "DepthwiseConv1DReparameterization",
    VariationalDepthwiseConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=1,
)


DepthwiseConv2DReparameterization = bayesian_class(
    "DepthwiseConv2DReparameterization",
    VariationalDepthwiseConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=2,
)


DepthwiseConv1DFlipout = bayesian_class(
    "DepthwiseConv1DFlipout",
    VariationalDepthwiseConv,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=1,
)


DepthwiseConv2DFlipout = bayesian_class(
    "DepthwiseConv2DFlipout",
    VariationalDepthwiseConv,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=2,
)
