"""The layer-cost workloads, shared by `run.py`, `mean_mode.py` and
`conv_cost.py`: each Bayesian layer kind, the matching `keras.layers`
layer, and the sizes they run at.

- Convolutions: N=32 examples of 32x32x16 into a 3x3 convolution with 32
  filters, padding "same" (the transposed layer: the same with
  `Conv2DTranspose`); `quick`: N=2 of 6x6x2 into 4 filters.
- Dense: N=32 examples (`dense_batch`) of 1024 features into 512 units;
  `quick`: N=2 of 8 into 4.
- `BatchedConv2D`: 4 members (`quick`: 2) sharing the conv workload's
  input, against one `Conv2D` with members x filters outputs (the same
  arithmetic).

Keras, numpy and keras_bayes are imported inside the functions: the
parent process of the benchmark scripts never imports a backend.
"""

DENSE_BATCH = 32

# The family of each layer kind: which reference layer and sizes it takes.
FAMILIES = {
    "Conv2DReparameterization": "conv",
    "Conv2DFlipout": "conv",
    "Conv2DTransposeFlipout": "conv_transpose",
    "DenseReparameterization": "dense",
    "DenseFlipout": "dense",
    "DenseLocalReparameterization": "dense",
    "BatchedConv2D": "batched",
}

CONV_OPTIONS = {"kernel_size": 3, "padding": "same"}


def spec(kind, quick=False, dense_batch=DENSE_BATCH):
    """The sizes of `kind`'s workload, with its `family`.

    Args:
        kind: a key of `FAMILIES`.
        quick: tiny sizes, for smoke runs.
        dense_batch: examples per batch of the dense workloads.

    Returns:
        A dict: `family`, `batch`, and `features` / `units` (dense) or
        `size` / `channels` / `filters` (convolutions; `members` for the
        batched layer).
    """
    family = FAMILIES[kind]
    if family == "dense":
        if quick:
            return {"family": family, "batch": 2, "features": 8, "units": 4}
        return {
            "family": family,
            "batch": dense_batch,
            "features": 1024,
            "units": 512,
        }
    if quick:
        sizes = {"batch": 2, "size": 6, "channels": 2, "filters": 4}
    else:
        sizes = {"batch": 32, "size": 32, "channels": 16, "filters": 32}
    if family == "batched":
        sizes["members"] = 2 if quick else 4
    return dict(sizes, family=family)


def input_shape(workload):
    """The shape of one example (no batch axis), channels last."""
    if workload["family"] == "dense":
        return (workload["features"],)
    return (workload["size"], workload["size"], workload["channels"])


def keras_layers(kind, workload, **options):
    """`(Bayesian layer, matching keras.layers layer)` of a workload.

    Args:
        kind: a key of `FAMILIES`, the name of a `keras_bayes.layers` class.
        workload: from `spec`.
        **options: further arguments of the Bayesian layer (e.g.
            `posterior_value`).
    """
    import keras

    import keras_bayes as kb

    family = workload["family"]
    bayes_cls = getattr(kb.layers, kind)
    if family == "dense":
        units = workload["units"]
        return (
            bayes_cls(units, seed=1, **options),
            keras.layers.Dense(units),
        )
    filters = workload["filters"]
    if family == "batched":
        members = workload["members"]
        return (
            bayes_cls(
                filters, batch_shape=(members,), **CONV_OPTIONS, **options
            ),
            keras.layers.Conv2D(members * filters, **CONV_OPTIONS),
        )
    reference = (
        keras.layers.Conv2DTranspose
        if family == "conv_transpose"
        else keras.layers.Conv2D
    )
    return (
        bayes_cls(filters, seed=1, **CONV_OPTIONS, **options),
        reference(filters, **CONV_OPTIONS),
    )


def compiled_model(layer, shape, jit_compile="auto"):
    """A one-layer functional model, compiled with SGD and mean squared
    error, as `fit` would run it.

    Args:
        layer: the layer.
        shape: the shape of one example.
        jit_compile: `model.compile`'s `jit_compile`.
    """
    import keras

    inputs = keras.Input(shape=shape)
    model = keras.Model(inputs, layer(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-3),
        loss="mse",
        jit_compile=jit_compile,
    )
    return model


def example_batch(workload, seed=0):
    """One batch of standard normal inputs (float32 numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (workload["batch"],) + input_shape(workload)
    return rng.normal(size=shape).astype("float32")
