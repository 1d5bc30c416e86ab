"""Layouts of posterior variables for model parallelism.

Under JAX's `keras.distribution.ModelParallel`, a `LayoutMap` gives each
variable a layout by its path (`"block/query/kernel"`): an exact key, or
else the one key that, read as a regular expression, matches the whole
path. A Bayesian layer's weight `kernel` is held as `kernel_loc` and the
scale variable of its posterior family, so a map written for plain layers
(e.g. a keras-hub backbone's `get_layout_map`) matches neither and leaves
the posterior replicated. `posterior_layout_map` extends such a map to them.
"""

import keras

from keras_bayes import _validation, posteriors


def _posterior_suffixes():
    """The suffixes of a weight's posterior variables (`w_loc`, ...), in
    every family known by name."""
    return sorted(
        {
            suffix
            for name in posteriors.names()
            for suffix, _ in posteriors.get(name).variables
        }
    )


def posterior_layout_map(layout_map):
    """A copy of `layout_map` that also lays out the weights' posteriors.

    Each key `K` becomes a pattern matching what `K` matched and the same
    paths followed by the suffix of a posterior variable (`_loc`, and
    the scale's of a stochastic family), with the same layout: the
    posterior mean and scale of a weight are sharded as the plain weight
    would be. Paths that `K` matched keep their layout.

    Args:
        layout_map: a `keras.distribution.LayoutMap`.

    Returns:
        A new `keras.distribution.LayoutMap` on the same device mesh.

    Example:

    ```python
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
    layout_map = kb.distribution.posterior_layout_map(
        keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    )
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
    )
    ```
    """
    if not isinstance(layout_map, keras.distribution.LayoutMap):
        raise _validation.invalid(
            "layout_map",
            "Expected a `keras.distribution.LayoutMap`.",
            layout_map,
        )
    suffixes = "|".join(f"_{suffix}" for suffix in _posterior_suffixes())
    extended = keras.distribution.LayoutMap(layout_map.device_mesh)
    for key, layout in layout_map.items():
        extended[f"(?:{key})(?:{suffixes})?"] = tuple(layout.axes)
    return extended
