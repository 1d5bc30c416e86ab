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
    python benchmarks/soak.py --backend jax --steps 500
"""

import argparse
import json
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
BATCH = 32
STEPS_PER_EPOCH = 20
WARMUP_EPOCHS = 2


def resident_mib():
    """Current resident set size in MiB (peak size without `/proc`)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def soak(steps):
    """Train for `steps` steps in this process; returns the measurements."""
    import keras
    import numpy as np

    import keras_bayes as kb

    keras.utils.set_random_seed(0)
    num_train = BATCH * STEPS_PER_EPOCH
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
            memory.append(resident_mib())

    epochs = max(WARMUP_EPOCHS + 2, steps // STEPS_PER_EPOCH)
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
        "steps": epochs * STEPS_PER_EPOCH,
        "seconds": seconds,
        "rss_after_warmup_mib": after_warmup,
        "rss_middle_mib": middle,
        "rss_end_mib": end,
        "growth_mib": end - after_warmup,
        "second_half_growth_mib": end - middle,
        "rss_max_mib": max(memory[WARMUP_EPOCHS - 1 :]),
        "final_loss": float(history.history["loss"][-1]),
    }


def run_backend(backend, steps):
    """Run `soak` in a fresh process with `KERAS_BACKEND=backend`."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", "--steps", str(steps)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"soak run on {backend} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1])


def format_result(result):
    return (
        f"{result['backend']}: {result['steps']} steps in "
        f"{result['seconds']:.0f} s; RSS after warm-up "
        f"{result['rss_after_warmup_mib']:.1f} MiB, mid-run "
        f"{result['rss_middle_mib']:.1f} MiB, end "
        f"{result['rss_end_mib']:.1f} MiB; growth "
        f"{result['growth_mib']:+.1f} MiB (second half "
        f"{result['second_half_growth_mib']:+.1f} MiB); final loss "
        f"{result['final_loss']:.3f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "all"),
        default="all",
        help="one backend, or all three, each in its own process",
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(soak(args.steps)))
        return 0
    # Make the package importable from the repository root.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")])
    )
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    # One after the other: parallel runs would share the cores and the
    # memory pressure.
    for backend in backends:
        print(format_result(run_backend(backend, args.steps)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
