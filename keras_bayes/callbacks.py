"""Training callbacks for Bayesian models."""

import numbers

import keras

from keras_bayes import _validation
from keras_bayes._export import register
from keras_bayes.workflows import bayesian_layers


@register
class KLWeightScheduler(keras.callbacks.Callback):
    """Anneal the KL term during `fit` (KL warm-up), without recompiling.

    At the start of every epoch each Bayesian layer's `kl_weight` becomes
    `schedule(epoch) * base`, where `base` is that layer's `kl_weight` when
    the callback first saw the model (e.g. `1 / num_train_examples`). The
    weight lives in a variable of the layer, so the compiled train step
    picks up the new value at once. The factor is logged as `kl_factor`.

    Args:
        schedule: a function `epoch -> factor` (epochs count from 0), or a
            sequence of factors, one per epoch, whose last value holds for
            the remaining epochs. Factors must be finite and non-negative.
        verbose: 1 to print the factor at the start of each epoch.

    Example:

    ```python
    warmup = kb.callbacks.KLWeightScheduler(lambda epoch: min(1.0, epoch / 5))
    model.fit(x, y, epochs=20, callbacks=[warmup])
    ```
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if isinstance(schedule, (list, tuple)):
            if not schedule:
                raise _validation.invalid(
                    "schedule",
                    "Expected a callable or a non-empty sequence of factors.",
                    schedule,
                )
            for factor in schedule:
                self._check_factor(factor)
        elif not callable(schedule):
            raise _validation.invalid(
                "schedule",
                "Expected a callable or a non-empty sequence of factors.",
                schedule,
            )
        self.schedule = schedule
        self.verbose = verbose
        self._base_weights = None
        self._factor = None

    @staticmethod
    def _check_factor(factor):
        try:
            return _validation.kl_weight(factor)
        except ValueError:
            raise _validation.invalid(
                "schedule",
                "Expected every factor to be a finite non-negative number.",
                factor,
            ) from None

    def factor(self, epoch):
        """The KL factor of `epoch` (0-based)."""
        if isinstance(self.schedule, (list, tuple)):
            value = self.schedule[min(epoch, len(self.schedule) - 1)]
        else:
            value = self.schedule(epoch)
        if not isinstance(value, numbers.Real):
            value = float(keras.ops.convert_to_numpy(value))
        return self._check_factor(value)

    def on_train_begin(self, logs=None):
        layers = bayesian_layers(self.model)
        if not layers:
            raise ValueError(
                "KLWeightScheduler found no Bayesian layer in the model: "
                "there is no KL term to anneal."
            )
        if self._base_weights is None:
            # Kept across `fit` calls, so that a second `fit` anneals from
            # the same base instead of from the last annealed value.
            self._base_weights = [(layer, layer.kl_weight) for layer in layers]

    def on_epoch_begin(self, epoch, logs=None):
        self._factor = self.factor(epoch)
        for layer, base in self._base_weights:
            layer.kl_weight = base * self._factor
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: KL weight factor {self._factor:.4g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._factor is not None:
            logs["kl_factor"] = self._factor

    def get_config(self):
        schedule = self.schedule
        if callable(schedule):
            # Module-level functions serialize by name; lambdas cannot.
            schedule = keras.saving.serialize_keras_object(schedule)
        else:
            schedule = list(schedule)
        return {"schedule": schedule, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(
                config["schedule"]
            )
        return cls(**config)
