"""Bayesian convolutions of rank 1, 2 and 3."""

from keras_bayes.layers import _docs
from keras_bayes.layers.geometry import ConvGeometry
from keras_bayes.layers.kernel import KernelLayer, bayesian_class

ARGS_DOC = _docs.layer_doc(
    "",
    "        filters: number of output channels.\n"
    + _docs.geometry(causal=True)
    + "        groups: number of channel groups; must divide `filters` and "
    "the input\n            channels.\n"
    "        activation: activation applied to the outputs.\n"
    "        use_bias: whether the layer has a bias.\n"
    + _docs.BAYESIAN_ARGS
    + _docs.CONTROL_ARGS,
    _docs.spatial_shapes("ConvND"),
    """\
    >>> layer = kb.layers.Conv2DFlipout(8, 3, padding="same")
    >>> layer(np.zeros((2, 16, 16, 3))).shape
    (2, 16, 16, 8)
""",
).lstrip()


class VariationalConv(ConvGeometry, KernelLayer):
    """Base of the Bayesian convolutions; subclasses fix `rank`."""


REPARAMETERIZATION_DOC, FLIPOUT_DOC = _docs.estimator_summaries(
    "{rank}D convolution with a weight posterior",
    "`y = conv(x, loc) + s_out * conv(x * s_in, scale * eps)`",
    "It costs about twice one convolution.",
)


Conv1DReparameterization = bayesian_class(
    "Conv1DReparameterization",
    VariationalConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=1,
)


Conv2DReparameterization = bayesian_class(
    "Conv2DReparameterization",
    VariationalConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=2,
)


Conv3DReparameterization = bayesian_class(
    "Conv3DReparameterization",
    VariationalConv,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=3,
)


Conv1DFlipout = bayesian_class(
    "Conv1DFlipout", VariationalConv, "flipout", FLIPOUT_DOC, ARGS_DOC, rank=1
)


Conv2DFlipout = bayesian_class(
    "Conv2DFlipout", VariationalConv, "flipout", FLIPOUT_DOC, ARGS_DOC, rank=2
)


Conv3DFlipout = bayesian_class(
    "Conv3DFlipout", VariationalConv, "flipout", FLIPOUT_DOC, ARGS_DOC, rank=3
)


# The names of `tfp.layers`, for users migrating from TensorFlow Probability.
Convolution1DReparameterization = Conv1DReparameterization
Convolution2DReparameterization = Conv2DReparameterization
Convolution3DReparameterization = Conv3DReparameterization
Convolution1DFlipout = Conv1DFlipout
Convolution2DFlipout = Conv2DFlipout
Convolution3DFlipout = Conv3DFlipout
