"""Soak run: memory of a long training run of a small Bayesian CNN.

Trains a small Bayesian CNN (Flipout and reparameterization convolutions, a
Flipout dense head, KL annealing with `kb.callbacks.KLWeightScheduler`) for
2,000 steps with `model.fit` and records the process' resident memory
(`VmRSS` from `/proc/self/status`; the peak `ru_maxrss` where there is no
`/proc`) at the end of every epoch. Reported: the resident memory after
the warm-up epochs (compilation, allocator caches), at mid-run and at the
end, the growth from warm-up to end, and the growth over the second half
alone, where a leak shows as a steady climb and noise as a few MiB.

Every epoch also switches the model to mean mode for one `predict` and
back, so the control variables and the compiled predict function are
exercised too.

Usage:
    python benchmarks/soak.py                     # every backend, in turn
    python benchmarks/soak.py --backends jax --steps 500
    python benchmarks/soak.py --json soak.json
"""

import sys
import time

import harness

BATCH = 32
STEPS_PER_EPOCH = 20
WARMUP_EPOCHS = 2


def soak(steps, steps_per_epoch=STEPS_PER_EPOCH):
    """Train for `steps` steps in this process; returns the measurements.

    Args:
        steps: training steps (at least `WARMUP_EPOCHS + 2` epochs run).
        steps_per_epoch: steps between two memory readings.
    """
    import keras
    import numpy as np

    import keras_bayes as kb

    keras.utils.set_random_seed(0)
    num_train = BATCH * steps_per_epoch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_train, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 10, size=(num_train,))
    kl_weight = 1.0 / num_train
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            kb.layers.Conv2DFlipout(
                8, 3, activation="relu", kl_weight=kl_weight
            ),
            keras.layers.MaxPooling2D(),
            kb.layers.Conv2DReparameterization(
                8, 3, activation="relu", kl_weight=kl_weight
            ),
            keras.layers.Flatten(),
            kb.layers.DenseFlipout(10, kl_weight=kl_weight),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    memory = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kb.set_posterior_value(self.model, "mean")
            self.model.predict(x[:BATCH], batch_size=BATCH, verbose=0)
            kb.set_posterior_value(self.model, "sample")
            memory.append(harness.resident_mib())

    epochs = max(WARMUP_EPOCHS + 2, steps // steps_per_epoch)
    warmup = kb.callbacks.KLWeightScheduler(lambda e: min(1.0, (e + 1) / 10))
    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        callbacks=[warmup, Probe()],
    )
    seconds = time.perf_counter() - start
    after_warmup = memory[WARMUP_EPOCHS - 1]
    middle = memory[(WARMUP_EPOCHS - 1 + len(memory) - 1) // 2]
    end = memory[-1]
    return {
        "backend": keras.backend.backend(),
        "steps": epochs * steps_per_epoch,
        "seconds": seconds,
        "rss_after_warmup_mib": after_warmup,
        "rss_middle_mib": middle,
        "rss_end_mib": end,
        "growth_mib": end - after_warmup,
        "second_half_growth_mib": end - middle,
        "rss_max_mib": max(memory[WARMUP_EPOCHS - 1 :]),
        "final_loss": float(history.history["loss"][-1]),
    }


def report(results, args):
    rows = [
        [
            backend,
            f"{r['steps']:,}",
            f"{r['seconds']:.0f} s",
            f"{r['rss_after_warmup_mib']:.1f} MiB",
            f"{r['rss_middle_mib']:.1f} MiB",
            f"{r['rss_end_mib']:.1f} MiB",
            f"{r['growth_mib']:+.1f} MiB",
            f"{r['second_half_growth_mib']:+.1f} MiB",
            f"{r['final_loss']:.3f}",
        ]
        for backend, r in results.items()
    ]
    header = [
        "backend",
        "steps",
        "time",
        "RSS after warm-up",
        "mid-run",
        "end",
        "growth",
        "second half",
        "final loss",
    ]
    return harness.table(header, rows)


def main(argv=None):
    parser = harness.parser(__doc__, quick=False)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=STEPS_PER_EPOCH,
        help="steps between two memory readings",
    )
    args = harness.parse(parser, argv)
    # The workers run one after the other: parallel runs would share the
    # cores and the memory pressure.
    return harness.main(
        __file__,
        args,
        lambda a: soak(a.steps, a.steps_per_epoch),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
