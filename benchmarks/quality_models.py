"""The networks of the quality benchmark (`benchmarks/quality.py`).

One small CNN per task (conv-pool-conv-pool-flatten-dense), built four
ways: with `keras.layers` (the deterministic twin), with keras-bayes
layers of one estimator, as a deep ensemble of batched convolutions, and
with rank-1 layers. `TRAINING` fixes each task's training.
"""

import keras

import keras_bayes as kb

# Per task: epochs, batch size, peak Adam learning rate (cosine decay to 0),
# conv filters. Fixed before any measurement (digits: as `make demo`).
TRAINING = {
    "digits": {"epochs": 40, "batch_size": 64, "lr": 1e-2, "filters": (16, 32)},
    "vowels": {"epochs": 60, "batch_size": 32, "lr": 3e-3, "filters": (32, 32)},
}


def _conv_stack(task, conv, pool, head, members=None):
    """conv-pool-conv-pool-flatten-dense, built from layer factories."""
    shape = task["x_train"].shape[1:]
    first, second = TRAINING[task["name"]]["filters"]
    layers = [keras.Input(shape=shape), conv(first), pool(), conv(second)]
    layers.append(pool())
    if members is None:
        layers.append(keras.layers.Flatten())
    else:
        layers.append(keras.layers.Reshape((members, -1)))
    layers += head(task["num_classes"])
    return keras.Sequential(layers)


def _pool(rank):
    return lambda: getattr(keras.layers, f"MaxPooling{rank}D")(2)


def twin_model(task):
    rank = task["rank"]
    conv_class = getattr(keras.layers, f"Conv{rank}D")
    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters, 3, padding="same", activation="relu"
        ),
        _pool(rank),
        lambda classes: [keras.layers.Dense(classes, activation="softmax")],
    )


def bayesian_model(task, estimator, settings):
    """The twin's network with keras-bayes layers of one estimator."""
    rank = task["rank"]
    num_train = len(task["x_train"])
    if settings["loc_init"] == "glorot":
        loc_initializer = "glorot_uniform"
    elif settings["loc_init"] == "default":
        loc_initializer = None
    else:
        raise ValueError(
            "Expected loc_init 'default' or 'glorot'. "
            f"Received: loc_init={settings['loc_init']!r}"
        )

    def bayesian_args():
        return {
            "kernel_posterior": kb.posteriors.MeanFieldNormal(
                loc_initializer=loc_initializer,
                untransformed_scale_initializer=(
                    keras.initializers.RandomNormal(settings["init"], 0.1)
                ),
            ),
            "kernel_prior": kb.priors.Normal(0.0, settings["prior"]),
            "kl_weight": settings["tau"] / num_train,
        }

    conv_class = getattr(kb.layers, f"Conv{rank}D{estimator}")
    dense_class = getattr(kb.layers, f"Dense{estimator}")
    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters, 3, padding="same", activation="relu", **bayesian_args()
        ),
        _pool(rank),
        lambda classes: [
            dense_class(classes, activation="softmax", **bayesian_args())
        ],
    )


def _member_pool(rank):
    # Member outputs are (N, K, *spatial, C): pool the spatial axes only.
    pool_class = getattr(keras.layers, f"MaxPooling{rank + 1}D")
    return lambda: pool_class((1,) + (2,) * rank)


def ensemble_model(task, members):
    """K twins side by side: batched convolutions, outputs (N, K, classes)."""
    rank = task["rank"]
    conv_class = getattr(kb.layers, f"BatchedConv{rank}D")

    def head(classes):
        # A dense layer per member: a 1x1 batched convolution over a
        # length-1 axis.
        return [
            keras.layers.Reshape((members, 1, -1)),
            kb.layers.BatchedConv1D(classes, 1, batch_shape=(members,)),
            keras.layers.Reshape((members, classes)),
            keras.layers.Softmax(),
        ]

    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters,
            3,
            padding="same",
            activation="relu",
            batch_shape=(members,),
        ),
        _member_pool(rank),
        head,
        members=members,
    )


def rank1_available():
    return hasattr(kb.layers, "Conv2DRank1") and hasattr(
        kb.layers, "DenseRank1"
    )


def rank1_model(task, settings):
    """Rank-1 layers with K members; outputs (N, K, classes)."""
    rank = task["rank"]
    members = int(settings["members"])
    kl_weight = settings["tau"] / len(task["x_train"])
    conv_class = getattr(kb.layers, f"Conv{rank}DRank1")
    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters,
            3,
            padding="same",
            activation="relu",
            batch_shape=(members,),
            kl_weight=kl_weight,
        ),
        _member_pool(rank),
        lambda classes: [
            kb.layers.DenseRank1(
                classes,
                activation="softmax",
                batch_shape=(members,),
                kl_weight=kl_weight,
            )
        ],
        members=members,
    )
