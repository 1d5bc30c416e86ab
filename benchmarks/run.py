"""Layer cost: Bayesian layers against the matching deterministic layers.

For each backend (one worker process each) and each layer kind, times one
training step (forward, backward, KL, optimizer update) and one inference
step of a one-layer model, as a ratio to the matching `keras.layers` layer
in the same process. Both models go through Keras' own compiled functions
(`train_on_batch` / `predict_on_batch` run the step function `fit` /
`predict` use, with `jit_compile="auto"`: XLA on JAX; on TensorFlow a
`tf.function`, with XLA only when an accelerator is present; eager on
PyTorch). The repeats of the two models alternate (`harness.time_steps`),
so that drift of a shared machine hits both alike, and the medians are
compared.

Also measured:
- peak memory of a training step (`harness.peak_step_memory_mib`; Linux
  only, else "-");
- `kb.uncertainty.mc_predict` with S samples against S passes of
  `model.predict` and against S passes of `predict_on_batch` (the same
  compiled step without `predict`'s per-call data pipeline);
- when installed, TensorFlow Probability's `tfp.layers` under `tf_keras`
  and bayesian-torch, each against its own framework's plain layer, in
  separate processes; and, in the PyTorch process, keras-bayes'
  `Conv2DFlipout` against bayesian-torch's `Conv2dFlipout` in absolute
  time, interleaved. Neither is a project dependency: when absent they are
  skipped with a note.

Usage:
    python benchmarks/run.py                       # every backend
    python benchmarks/run.py --backends jax torch --repeats 60
    python benchmarks/run.py --quick               # tiny smoke run
    python benchmarks/run.py --threads 1 --json layer_cost.json
"""

import functools
import sys

import harness
import workloads

# The layer kinds measured, in the order of the tables.
KINDS = (
    "Conv2DReparameterization",
    "Conv2DFlipout",
    "Conv2DTransposeFlipout",
    "DenseFlipout",
    "DenseLocalReparameterization",
    "BatchedConv2D",
)
# Peer libraries: worker name -> (modules they need, extra environment).
EXTERNAL = {
    "tfp": (
        ("tensorflow_probability", "tf_keras"),
        (("TF_USE_LEGACY_KERAS", "1"),),
    ),
    "bayesian_torch": (("bayesian_torch", "torch"), ()),
}
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}


def _train_and_infer(models, x, y):
    """`(train steps, inference steps)`: dicts of zero-argument callables
    of `train_on_batch(x, y[name])` and `predict_on_batch(x)`."""
    train = {
        name: functools.partial(model.train_on_batch, x, y[name])
        for name, model in models.items()
    }
    infer = {
        name: functools.partial(model.predict_on_batch, x)
        for name, model in models.items()
    }
    return train, infer


def _row(kind, train, infer):
    """A result row: train and infer `compare`s, Bayesian / reference."""
    return {
        "kind": kind,
        "train": harness.compare(train["bayes"], train["ref"]),
        "infer": harness.compare(infer["bayes"], infer["ref"]),
    }


# -- keras-bayes (any Keras 3 backend) ----------------------------------


def measure_keras(
    quick=False,
    repeats=30,
    warmup=5,
    kinds=None,
    dense_batch=workloads.DENSE_BATCH,
    jit_compile="auto",
):
    """Ratios of keras-bayes layers to Keras layers on the current backend.

    Args:
        quick: tiny sizes.
        repeats: timed steps of each model.
        warmup: untimed steps of each model first.
        kinds: the layer kinds (default `KINDS`).
        dense_batch: examples per batch of the dense workloads.
        jit_compile: `model.compile`'s `jit_compile`.

    Returns:
        A list of rows: `kind`, `train` / `infer` (`harness.compare` of the
        Bayesian model against the reference), `memory_mib` (peak growth of
        one training step, Bayesian and reference) and `jit`.
    """
    import keras
    import numpy as np

    results = []
    for kind in kinds or KINDS:
        workload = workloads.spec(kind, quick, dense_batch)
        shape = workloads.input_shape(workload)
        models = {
            name: workloads.compiled_model(layer, shape, jit_compile)
            for name, layer in zip(
                ("bayes", "ref"), workloads.keras_layers(kind, workload)
            )
        }
        x = workloads.example_batch(workload)
        # Contiguous targets for both: a broadcast (stride-0) view would be
        # copied, or read through its strides, on every step.
        y = {
            name: np.zeros((len(x),) + model.output_shape[1:], "float32")
            for name, model in models.items()
        }
        train_steps, infer_steps = _train_and_infer(models, x, y)
        row = _row(
            kind,
            harness.time_steps(train_steps, repeats, warmup),
            harness.time_steps(infer_steps, repeats, warmup),
        )
        row["memory_mib"] = [
            harness.peak_step_memory_mib(train_steps[name])
            for name in ("bayes", "ref")
        ]
        row["jit"] = bool(models["bayes"].jit_compile)
        results.append(row)
        del models, train_steps, infer_steps
        keras.backend.clear_session()
    return results


def measure_mc_predict(quick=False, repeats=5, num_samples=10):
    """`mc_predict` with S samples against S single passes.

    Returns:
        A dict: `vs_predict` (time of `mc_predict` over S times one
        `model.predict(x)`), `vs_predict_on_batch` (over S passes of
        `predict_on_batch`, the compiled step alone) and the three median
        times in ms.
    """
    import keras
    import numpy as np

    import keras_bayes as kb

    workload = workloads.spec("Conv2DFlipout", quick)
    num_samples = 2 if quick else num_samples
    batch = workload["batch"]
    layer, _ = workloads.keras_layers("Conv2DFlipout", workload)
    model = workloads.compiled_model(layer, workloads.input_shape(workload))
    x = np.concatenate([workloads.example_batch(workload, s) for s in (0, 1)])

    def on_batch():
        for start in range(0, len(x), batch):
            model.predict_on_batch(x[start : start + batch])

    timings = harness.time_steps(
        {
            "mc": lambda: kb.uncertainty.mc_predict(
                model, x, num_samples=num_samples, batch_size=batch, verbose=0
            ),
            "predict": lambda: model.predict(x, batch_size=batch, verbose=0),
            "on_batch": on_batch,
        },
        repeats,
        warmup=2,
    )
    keras.backend.clear_session()
    ms = {name: 1e3 * t.median for name, t in timings.items()}
    return {
        "num_samples": num_samples,
        "vs_predict": ms["mc"] / (num_samples * ms["predict"]),
        "vs_predict_on_batch": ms["mc"] / (num_samples * ms["on_batch"]),
        "mc_ms": ms["mc"],
        "predict_ms": ms["predict"],
        "on_batch_ms": ms["on_batch"],
    }


# -- TensorFlow Probability under tf_keras --------------------------------


def measure_tfp(quick=False, repeats=30, warmup=5):
    """`tfp.layers` against `tf_keras.layers` (needs TF_USE_LEGACY_KERAS=1)."""
    import numpy as np
    import tensorflow_probability as tfp
    import tf_keras

    pairs = {
        "Conv2DReparameterization": (
            tfp.layers.Convolution2DReparameterization,
            tf_keras.layers.Conv2D,
        ),
        "Conv2DFlipout": (
            tfp.layers.Convolution2DFlipout,
            tf_keras.layers.Conv2D,
        ),
        "DenseFlipout": (tfp.layers.DenseFlipout, tf_keras.layers.Dense),
        "DenseLocalReparameterization": (
            tfp.layers.DenseLocalReparameterization,
            tf_keras.layers.Dense,
        ),
    }
    results = []
    for kind in KINDS:
        if kind not in pairs:
            continue
        workload = workloads.spec(kind, quick)
        shape = workloads.input_shape(workload)
        if workload["family"] == "dense":
            args, kwargs = (workload["units"],), {}
        else:
            args, kwargs = (workload["filters"],), workloads.CONV_OPTIONS
        models = {}
        for name, cls in zip(("bayes", "ref"), pairs[kind]):
            model = tf_keras.Sequential(
                [tf_keras.Input(shape=shape), cls(*args, **kwargs)]
            )
            model.compile(
                optimizer=tf_keras.optimizers.SGD(learning_rate=1e-3),
                loss="mse",
            )
            models[name] = model
        x = workloads.example_batch(workload)
        target = np.zeros((len(x),) + models["ref"].output_shape[1:], "float32")
        train_steps, infer_steps = _train_and_infer(
            models, x, {name: target for name in models}
        )
        results.append(
            _row(
                kind,
                harness.time_steps(train_steps, repeats, warmup),
                harness.time_steps(infer_steps, repeats, warmup),
            )
        )
        tf_keras.backend.clear_session()
    return results


# -- bayesian-torch ---------------------------------------------------------


def _torch_steps(model, x, bayesian):
    """`(training step, inference step)` of a torch module in a plain loop.

    The training step: forward, mean squared output (plus the KL, which a
    bayesian-torch layer returns with its output), backward, SGD update.
    """
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train():
        optimizer.zero_grad()
        if bayesian:
            out, kl = model(x)
            loss = torch.mean(torch.square(out)) + kl
        else:
            loss = torch.mean(torch.square(model(x)))
        loss.backward()
        optimizer.step()

    def infer():
        with torch.no_grad():
            model(x)

    return train, infer


def _torch_conv_pair(bayes_cls, workload, transpose=False):
    """A bayesian-torch convolution and the `torch.nn` one, same sizes."""
    import torch

    ref_cls = torch.nn.ConvTranspose2d if transpose else torch.nn.Conv2d
    sizes = (workload["channels"], workload["filters"], 3)
    return bayes_cls(*sizes, padding=1), ref_cls(*sizes, padding=1)


def _torch_input(workload):
    """The workload's batch as a torch tensor, channels first."""
    import numpy as np
    import torch

    x = workloads.example_batch(workload)
    if workload["family"] != "dense":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return torch.from_numpy(x)


def measure_bayesian_torch(quick=False, repeats=30, warmup=5):
    """bayesian-torch layers against `torch.nn` layers, plain torch loop."""
    import torch
    from bayesian_torch import layers as bt

    pairs = {
        "Conv2DReparameterization": bt.Conv2dReparameterization,
        "Conv2DFlipout": bt.Conv2dFlipout,
        "Conv2DTransposeFlipout": bt.ConvTranspose2dFlipout,
        "DenseFlipout": bt.LinearFlipout,
    }
    torch.manual_seed(0)
    results = []
    for kind in KINDS:
        if kind not in pairs:
            continue
        workload = workloads.spec(kind, quick)
        if workload["family"] == "dense":
            features, units = workload["features"], workload["units"]
            models = (
                pairs[kind](features, units),
                torch.nn.Linear(features, units),
            )
        else:
            transpose = workload["family"] == "conv_transpose"
            models = _torch_conv_pair(pairs[kind], workload, transpose)
        x = _torch_input(workload)
        steps = {
            name: _torch_steps(model, x, bayesian=name == "bayes")
            for name, model in zip(("bayes", "ref"), models)
        }
        try:
            steps["bayes"][0]()
        except RuntimeError as error:
            # Reported in the table as a failure of that library's layer.
            results.append({"kind": kind, "error": str(error)[:200]})
            continue
        timings = [
            harness.time_steps(
                {name: pair[index] for name, pair in steps.items()},
                repeats,
                warmup,
            )
            for index in (0, 1)
        ]
        results.append(_row(kind, *timings))
    return results


def compare_torch_flipout(quick=False, repeats=30, warmup=5):
    """keras-bayes against bayesian-torch `Conv2dFlipout`, one process.

    Needs the torch backend. Five training steps are interleaved, so that
    the absolute times are comparable on a shared machine: keras-bayes and
    `keras.layers.Conv2D` through `train_on_batch`; bayesian-torch and
    `torch.nn.Conv2d` in a plain torch loop; and the keras-bayes layer in
    that same plain loop (a Keras layer on the torch backend is a
    `torch.nn.Module`: call it, add `sum(layer.losses)`, backward, step),
    which compares the two layers without Keras' training machinery.
    """
    import numpy as np
    import torch
    from bayesian_torch import layers as bt

    workload = workloads.spec("Conv2DFlipout", quick)
    shape = workloads.input_shape(workload)
    kb_model, keras_ref = (
        workloads.compiled_model(layer, shape)
        for layer in workloads.keras_layers("Conv2DFlipout", workload)
    )
    x = workloads.example_batch(workload)
    y = np.zeros((len(x),) + keras_ref.output_shape[1:], "float32")
    bt_model, torch_ref = _torch_conv_pair(bt.Conv2dFlipout, workload)
    x_torch = _torch_input(workload)
    bt_step = _torch_steps(bt_model, x_torch, bayesian=True)[0]
    torch_step = _torch_steps(torch_ref, x_torch, bayesian=False)[0]

    # The keras-bayes layer in the plain loop: channels_last input, its own
    # KL from `layer.losses`.
    loop_layer, _ = workloads.keras_layers("Conv2DFlipout", workload)
    x_nhwc = torch.from_numpy(x)
    loop_layer(x_nhwc)
    loop_optimizer = torch.optim.SGD(
        [v.value for v in loop_layer.trainable_variables], lr=1e-3
    )

    def kb_loop_step():
        loop_optimizer.zero_grad()
        out = loop_layer(x_nhwc)
        (torch.mean(torch.square(out)) + sum(loop_layer.losses)).backward()
        loop_optimizer.step()

    timings = harness.time_steps(
        {
            "keras_bayes": lambda: kb_model.train_on_batch(x, y),
            "keras_conv2d": lambda: keras_ref.train_on_batch(x, y),
            "bayesian_torch": bt_step,
            "torch_conv2d": torch_step,
            "keras_bayes_loop": kb_loop_step,
        },
        repeats,
        warmup,
    )
    t = {name: timing.median for name, timing in timings.items()}
    results = {f"{name}_ms": 1e3 * value for name, value in t.items()}
    results["keras_bayes_ratio"] = t["keras_bayes"] / t["keras_conv2d"]
    results["bayesian_torch_ratio"] = t["bayesian_torch"] / t["torch_conv2d"]
    results["keras_bayes_loop_ratio"] = (
        t["keras_bayes_loop"] / t["torch_conv2d"]
    )
    results["speedup"] = t["bayesian_torch"] / t["keras_bayes"]
    results["loop_speedup"] = t["bayesian_torch"] / t["keras_bayes_loop"]
    return results


# -- report -----------------------------------------------------------------


def format_table(results):
    """Markdown table of training and inference ratios, one column pair per
    worker (backends, then peer libraries)."""
    titles = {"tfp": "TFP (tf_keras)", "bayesian_torch": "bayesian-torch"}
    header = ["layer"]
    for name in results:
        title = titles.get(name, name)
        header += [f"{title} train", f"{title} infer"]
    rows = []
    for kind in KINDS:
        cells = [kind]
        for result in results.values():
            match = [r for r in result["layers"] if r["kind"] == kind]
            if match and "error" in match[0]:
                cells += ["fails", "fails"]
            elif match:
                cells += [
                    harness.fmt_ratio(match[0][step]["ratio"])
                    for step in ("train", "infer")
                ]
            else:
                cells += ["n/a", "n/a"]
        if any(cell != "n/a" for cell in cells[1:]):
            rows.append(cells)
    return harness.table(header, rows)


def format_details(results):
    """Medians with quartiles (ms), the ratios' spread, memory, jit."""
    rows = []
    for backend, result in results.items():
        if backend not in harness.BACKENDS:
            continue
        for r in result["layers"]:
            cells = [backend, r["kind"]]
            for step in ("train", "infer"):
                c = r[step]
                cells.append(
                    harness.fmt_ms(c["candidate"], spread=True)
                    + " / "
                    + harness.fmt_ms(c["reference"], spread=True)
                )
                cells.append(harness.fmt_comparison(c))
            cells.append(
                " / ".join(
                    "-" if m is None else f"{m:.1f}" for m in r["memory_mib"]
                )
            )
            cells.append(r["jit"])
            rows.append(cells)
    lines = [
        harness.table(
            [
                "backend",
                "layer",
                "train ms (Bayes / ref)",
                "train ratio",
                "infer ms (Bayes / ref)",
                "infer ratio",
                "peak step memory MiB (Bayes / ref)",
                "jit",
            ],
            rows,
        )
    ]
    mc_rows = [
        [
            backend,
            mc["num_samples"],
            f"{mc['mc_ms']:.1f}",
            harness.fmt_ratio(mc["vs_predict"]),
            harness.fmt_ratio(mc["vs_predict_on_batch"]),
        ]
        for backend, result in results.items()
        if (mc := result.get("mc_predict"))
    ]
    if mc_rows:
        header = [
            "backend",
            "mc_predict S",
            "mc_predict ms",
            "/ (S x predict)",
            "/ (S x predict_on_batch pass)",
        ]
        lines += ["", harness.table(header, mc_rows)]
    return "\n".join(lines)


def format_torch_comparison(results):
    """One paragraph on keras-bayes against bayesian-torch, or ''."""
    t = results.get("torch", {}).get("torch_flipout")
    if not t:
        return ""
    return (
        "Conv2DFlipout training step, interleaved in one torch process: "
        f"keras-bayes {t['keras_bayes_ms']:.2f} ms "
        f"({t['keras_bayes_ratio']:.2f}x keras Conv2D "
        f"{t['keras_conv2d_ms']:.2f} ms), bayesian-torch "
        f"{t['bayesian_torch_ms']:.2f} ms "
        f"({t['bayesian_torch_ratio']:.2f}x torch Conv2d "
        f"{t['torch_conv2d_ms']:.2f} ms): keras-bayes "
        f"{t['speedup']:.2f}x faster. Both layers in the same plain "
        f"torch loop: keras-bayes {t['keras_bayes_loop_ms']:.2f} ms "
        f"({t['keras_bayes_loop_ratio']:.2f}x torch Conv2d), "
        f"{t['loop_speedup']:.2f}x faster than bayesian-torch."
    )


def report(results, args):
    text = [
        "Median step time, Bayesian / matching deterministic layer:",
        format_table(results),
        "",
        format_details(results),
    ]
    comparison = format_torch_comparison(results)
    if comparison:
        text += ["", comparison]
    return "\n".join(text)


# -- driver -----------------------------------------------------------------


def work(args):
    """The measurements of one worker (`args.worker`)."""
    timing = (args.quick, args.repeats, args.warmup)
    if args.worker == "tfp":
        return {"layers": measure_tfp(*timing)}
    if args.worker == "bayesian_torch":
        return {"layers": measure_bayesian_torch(*timing)}
    import keras_bayes as kb

    if args.no_channels_view:
        kb.config.set_torch_channels_view(False)
    results = {
        "layers": measure_keras(
            *timing,
            kinds=args.kinds,
            dense_batch=args.dense_batch,
            jit_compile=JIT_COMPILE[args.jit_compile],
        ),
        "mc_predict": None
        if args.no_mc_predict
        else measure_mc_predict(args.quick),
    }
    if args.worker == "torch" and harness.installed(
        *EXTERNAL["bayesian_torch"][0]
    ):
        results["torch_flipout"] = compare_torch_flipout(*timing)
    return results


def workers(args):
    """A worker per backend, then one per installed peer library."""
    result = harness.backend_workers(args)
    if args.no_external:
        return result
    for name, (modules, env) in EXTERNAL.items():
        if harness.installed(*modules):
            result.append(harness.Worker(name, "tensorflow", env))
        else:
            print(f"note: {name} is not installed; skipped.")
    return result


def parse_args(argv=None):
    parser = harness.parser(__doc__, repeats=40, warmup=5, kinds=KINDS)
    parser.add_argument(
        "--no-mc-predict", action="store_true", help="skip mc_predict"
    )
    parser.add_argument(
        "--dense-batch",
        type=int,
        default=workloads.DENSE_BATCH,
        help="examples per batch of the dense workloads",
    )
    parser.add_argument(
        "--no-external",
        action="store_true",
        help="skip TFP and bayesian-torch even when installed",
    )
    parser.add_argument(
        "--no-channels-view",
        action="store_true",
        help="PyTorch: convolve channels_last inputs through Keras' copying "
        "transposes instead of a channels-first view (for comparison)",
    )
    parser.add_argument(
        "--jit-compile",
        choices=tuple(JIT_COMPILE),
        default="auto",
        help="jit_compile of the Keras models (default: Keras' own choice, "
        "what `fit` does)",
    )
    return harness.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    return harness.main(
        __file__, args, work, report, None if args.worker else workers(args)
    )


if __name__ == "__main__":
    sys.exit(main())
