"""Docstring pieces shared by the layer families, written once."""

import textwrap

BAYESIAN_ARGS = """\
        kernel_posterior: a `kb.posteriors` object or its name. Defaults to
            `"mean_field_normal"`.
        kernel_prior: a `kb.priors` object, its name, or None (no kernel KL).
            Defaults to `"normal"`, N(0, 1).
        bias_posterior: `"deterministic"` (default) or
            `"mean_field_normal"`.
        bias_prior: as `kernel_prior`; None (default) means no bias KL.
"""

CONTROL_ARGS = """\
        kl_weight: multiplies the KL added with `add_loss`. Use
            `1 / num_train_examples` for the per-example negative ELBO.
        posterior_value: `"sample"` (default) draws weights on every call,
            in training and inference; `"mean"` uses the posterior mean and
            draws nothing.
        seed: int seed of the layer's `keras.random.SeedGenerator`.
        activity_regularizer: as in Keras.
        batch_shape: shape of a batch of independent posteriors (members).
            Defaults to `()`, a single posterior. Every variable gets these
            leading axes and the KL sums over the members.
"""

GEOMETRY_ARGS = """\
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive){causal}.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`.
        dilation_rate: int or tuple of `rank` ints. Defaults to 1.
"""

SPATIAL_SHAPES = """
    Input shape:
        `(batch, *spatial, channels)` for channels_last,
        `(batch, channels, *spatial)` for channels_first. With a
        `batch_shape`, also `(batch, *batch_shape, *spatial, channels)`
        (one input per member; the former is fed to every member).

    Output shape:
        As the matching `keras.layers.{keras_layer}`; with a `batch_shape`,
        `(batch, *batch_shape, ...)` (channels_last:
        `(batch, *batch_shape, *new_spatial, channels)`).
"""


def geometry(causal=False):
    """The geometry arguments of a convolution's `Args:`."""
    return GEOMETRY_ARGS.format(
        causal='; the 1D layers also take `"causal"`' if causal else ""
    )


def spatial_shapes(keras_layer):
    return SPATIAL_SHAPES.format(keras_layer=keras_layer)


def _paragraph(text, first_indent="    "):
    return textwrap.fill(
        text,
        76,
        initial_indent=first_indent,
        subsequent_indent="    ",
        break_on_hyphens=False,
    )


def estimator_summaries(what, flipout_formula, flipout_cost=""):
    """The class summaries of a kernel layer family, one per estimator.

    Args:
        what: e.g. `"{rank}D convolution with a weight posterior"`
            (`{rank}` is filled in per class).
        flipout_formula: Flipout's output in the family's map.
        flipout_cost: a sentence on Flipout's cost, or "".

    Returns:
        `(reparameterization summary, Flipout summary)`.
    """
    kl = "The KL to the prior is added with `add_loss`, times `kl_weight`."
    reparameterization = (
        _paragraph(f"{what}, reparameterization estimator.", "")
        + "\n\n"
        + _paragraph(
            "One draw of the weights (`loc + scale * eps`) per call, shared "
            f"by the whole batch (Kingma & Welling 2014). {kl}"
        )
        + "\n"
    )
    flipout = (
        _paragraph(f"{what}, Flipout estimator.", "")
        + "\n\n"
        + _paragraph(
            f"{flipout_formula} with Rademacher signs per example and "
            "channel (Wen et al. 2018): effectively independent weight "
            f"draws per example.{' ' + flipout_cost if flipout_cost else ''} "
            f"{kl}"
        )
        + "\n"
    )
    return reparameterization, flipout


def layer_doc(summary, args, shapes, example=""):
    """A layer docstring: summary, `Args:`, shapes and an example."""
    doc = f"{summary}\n\n    Args:\n{args}{shapes}"
    if example:
        doc += f"\n    Example:\n\n{example}"
    return doc
