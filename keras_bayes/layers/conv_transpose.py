"""Bayesian transposed convolutions of rank 1, 2 and 3."""

from keras_bayes.layers import _docs
from keras_bayes.layers.geometry import ConvTransposeGeometry
from keras_bayes.layers.kernel import KernelLayer, bayesian_class

ARGS_DOC = _docs.layer_doc(
    "",
    "        filters: number of output channels.\n"
    + _docs.geometry()
    + "        output_padding: None, or an int or tuple of `rank` ints, each\n"
    "            smaller than the matching stride: extra rows added at the "
    "end\n            of each spatial axis. None lets Keras infer the output "
    "size.\n"
    "        activation: activation applied to the outputs.\n"
    "        use_bias: whether the layer has a bias.\n"
    + _docs.BAYESIAN_ARGS
    + _docs.CONTROL_ARGS,
    "\n    Kernel layout is Keras': `kernel_size + (filters, in_channels)`, "
    "with\n    `batch_shape` in front.\n"
    + _docs.spatial_shapes("ConvNDTranspose"),
    """\
    >>> decoder = keras.Sequential([
    ...     keras.Input((7, 7, 16)),
    ...     kb.layers.Conv2DTransposeFlipout(8, 3, strides=2, padding="same"),
    ... ])
    >>> decoder(np.zeros((2, 7, 7, 16))).shape
    (2, 14, 14, 8)
""",
).lstrip()


class VariationalConvTranspose(ConvTransposeGeometry, KernelLayer):
    """Base of the Bayesian transposed convolutions; subclasses fix `rank`."""


REPARAMETERIZATION_DOC, FLIPOUT_DOC = _docs.estimator_summaries(
    "{rank}D transposed convolution with a weight posterior",
    "`y = conv_transpose(x, loc) + s_out * conv_transpose(x * s_in, "
    "scale * eps)`",
)


Conv1DTransposeReparameterization = bayesian_class(
    "Conv1DTransposeReparameterization",
    VariationalConvTranspose,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=1,
)


Conv2DTransposeReparameterization = bayesian_class(
    "Conv2DTransposeReparameterization",
    VariationalConvTranspose,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=2,
)


Conv3DTransposeReparameterization = bayesian_class(
    "Conv3DTransposeReparameterization",
    VariationalConvTranspose,
    "reparameterization",
    REPARAMETERIZATION_DOC,
    ARGS_DOC,
    rank=3,
)


Conv1DTransposeFlipout = bayesian_class(
    "Conv1DTransposeFlipout",
    VariationalConvTranspose,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=1,
)


Conv2DTransposeFlipout = bayesian_class(
    "Conv2DTransposeFlipout",
    VariationalConvTranspose,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=2,
)


Conv3DTransposeFlipout = bayesian_class(
    "Conv3DTransposeFlipout",
    VariationalConvTranspose,
    "flipout",
    FLIPOUT_DOC,
    ARGS_DOC,
    rank=3,
)
