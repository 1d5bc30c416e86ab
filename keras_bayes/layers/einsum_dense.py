"""Bayesian `EinsumDense` layers: the projections of transformers.

`keras.layers.EinsumDense(equation, output_shape, bias_axes=...)` computes
`einsum(equation, x, kernel) + bias`; the layers here hold a posterior
over the same kernel (Reparameterization, Flipout) or rank-1 factors
around a shared point kernel (Rank1), with Keras' kernel and bias shapes
(`maps/einsum.py`).
"""

import keras

from keras_bayes._export import public_class
from keras_bayes.layers import _docs, member_weights
from keras_bayes.layers.geometry import EinsumGeometry
from keras_bayes.layers.kernel import KernelLayer, bayesian_class
from keras_bayes.layers.rank1 import Rank1Layer

EINSUM_ARGS = """\
        equation: an einsum equation `X,Y->Z` (or `...X,Y->...Z`,
            `X...,Y->Z...`): input, kernel and output axes, the batch axis
            first in `X` and `Z`, as in `keras.layers.EinsumDense`.
        output_shape: the output shape without the batch axis (and the
            ellipsis' axes); None where the input gives the size.
        activation: activation applied to the outputs.
        bias_axes: output axis letters the bias spans (None: no bias).
"""

SHAPES = """
    Input shape:
        As `keras.layers.EinsumDense`: the rank of `X` (more with an
        ellipsis). With a `batch_shape` (equations without an ellipsis),
        also `(batch, *batch_shape, ...)`, one input per member; an input
        without member axes is fed to every member.

    Output shape:
        As `keras.layers.EinsumDense`; with a `batch_shape`,
        `(batch, *batch_shape, ...)`.
"""

ARGS_DOC = _docs.layer_doc(
    "",
    EINSUM_ARGS + _docs.BAYESIAN_ARGS + _docs.CONTROL_ARGS,
    SHAPES,
    """\
    >>> projection = kb.layers.EinsumDenseFlipout(
    ...     "abc,cde->abde", output_shape=(None, 4, 8), bias_axes="de")
    >>> projection(np.zeros((2, 16, 32))).shape
    (2, 16, 4, 8)
""",
).lstrip()


class VariationalEinsumDense(EinsumGeometry, KernelLayer):
    """Base of the Bayesian einsum layers; subclasses fix the estimator."""

    def build_weights(self, input_shape):
        kernel_shape, bias_shape = self._map.shapes(input_shape)
        self.declare_weight(
            "kernel", kernel_shape, self.kernel_posterior, self.kernel_prior
        )
        if self.use_bias:
            self.declare_weight(
                "bias", bias_shape, self.bias_posterior, self.bias_prior
            )
        self.input_spec = self._map.input_spec(input_shape)


EinsumDenseReparameterization = bayesian_class(
    "EinsumDenseReparameterization",
    VariationalEinsumDense,
    "reparameterization",
    "EinsumDense layer with a weight posterior, reparameterization.\n\n"
    "    One kernel draw per call, shared by the batch.\n",
    ARGS_DOC,
)


EinsumDenseFlipout = bayesian_class(
    "EinsumDenseFlipout",
    VariationalEinsumDense,
    "flipout",
    "EinsumDense layer with a weight posterior, Flipout estimator.\n\n"
    "    `y = einsum(x, loc) + s_out * einsum(x * s_in, scale * eps)`, with\n"
    "    random signs per example over the input feature axes (the input\n"
    "    axes summed with the kernel) and the output feature axes (the\n"
    "    kernel's axes in the output), broadcast over the other axes (e.g.\n"
    "    a sequence): decorrelated perturbations within a batch.\n",
    ARGS_DOC,
)


def _einsum_initializer(initializer, input_axes, output_axes):
    """Keras' fan rule for an einsum kernel: a `VarianceScaling` initializer
    without axes gets the kernel's input and output axes."""
    if not isinstance(initializer, keras.initializers.VarianceScaling):
        return initializer
    config = initializer.get_config()
    if "input_axes" not in config or (
        config["input_axes"] is not None and config["output_axes"] is not None
    ):
        return initializer
    config.update(input_axes=input_axes, output_axes=output_axes)
    return type(initializer).from_config(config)


class EinsumDenseRank1Base(EinsumGeometry, Rank1Layer):
    """Base of `EinsumDenseRank1`."""

    def build_weights(self, input_shape):
        linear_map = self._map
        members = self.batch_shape
        member_shape = linear_map.members.member_view(input_shape)
        kernel_shape = linear_map.member_kernel_shape(member_shape)
        outputs = linear_map.out_letters
        letters = linear_map.kernel_letters
        initializer = _einsum_initializer(
            self.kernel_initializer,
            [i for i, c in enumerate(letters) if c not in outputs],
            [i for i, c in enumerate(letters) if c in outputs],
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=member_weights.fresh(initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        in_sizes, out_sizes = linear_map.feature_sizes(input_shape)
        for name, sizes in (("alpha", in_sizes), ("gamma", out_sizes)):
            self.declare_weight(
                name,
                members + sizes,
                getattr(self, f"{name}_posterior"),
                getattr(self, f"{name}_prior"),
            )
        self.bias = None
        if self.use_bias:
            _, bias_shape = linear_map.shapes(input_shape)
            self.bias = member_weights.add_member_weight(
                self, "bias", bias_shape, members
            )
        self.input_spec = linear_map.input_spec(input_shape)


EinsumDenseRank1 = public_class(
    "EinsumDenseRank1",
    EinsumDenseRank1Base,
    """Rank-1 Bayesian EinsumDense layer (Dusenberry et al. 2020).

    Member `b` (of `batch_shape`) computes `einsum(x * r_b, kernel) * s_b +
    bias_b` with one shared point-estimate `kernel` (Keras' `EinsumDense`
    layout, no member axes), `r_b ~ N(alpha_loc[b], alpha_scale[b])` (the
    scale from its posterior family's variable) over the input feature
    axes (the input axes summed with the kernel, in input order) and `s_b ~
    N(gamma_loc[b], ...)` over the output feature axes (the kernel's axes
    in the output, in output order), drawn per example on every call in
    sample mode and broadcast over the other axes (e.g. a sequence), their
    means in mean mode. The KL of `alpha` and `gamma` to their priors
    (closed form, summed over members) is added with `add_loss`, times
    `kl_weight`.

    Args:
"""
    + EINSUM_ARGS
    + """\
        kernel_initializer, kernel_regularizer, kernel_constraint: of the
            shared kernel, as in Keras (a `VarianceScaling` initializer
            gets the kernel's fan axes, as in `keras.layers.EinsumDense`).
        bias_initializer, bias_regularizer, bias_constraint: of each
            member's bias (`batch_shape` + Keras' bias shape).
        alpha_posterior, gamma_posterior: `kb.posteriors` families of the
            factors. Defaults to `kb.posteriors.FactorNormal()`.
        alpha_prior, gamma_prior: `kb.priors` objects (or None: no KL
            term). Defaults to `kb.priors.Normal(1.0, 0.1)`.
"""
    + _docs.CONTROL_ARGS
    + SHAPES
    + """
    Example:

    >>> ensemble = kb.layers.EinsumDenseRank1(
    ...     "abc,cd->abd", output_shape=(None, 8), bias_axes="d",
    ...     batch_shape=(4,))
    >>> ensemble(np.zeros((2, 16, 32))).shape
    (2, 4, 16, 8)
""",
)
