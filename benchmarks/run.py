"""Layer cost: Bayesian layers against the matching deterministic layers.

For each backend (one subprocess each) and each layer kind, times one
training step (forward, backward, KL, optimizer update) and one inference
step of a one-layer model, as a ratio to the matching `keras.layers` layer
in the same process. Both models go through Keras' own compiled functions
(`train_on_batch` / `predict_on_batch` run the step function `fit` /
`predict` use, with `jit_compile="auto"`: XLA on JAX; on TensorFlow a
`tf.function`, with XLA only when an accelerator is present; eager on
PyTorch). The repeats of the two models alternate, so that drift of a
shared machine hits both alike, and the medians are compared.

Also measured:
- peak memory of a training step: the growth of the process' peak
  resident set size (`VmHWM`, reset through `/proc/self/clear_refs`) over
  three steps, from its resident size just before them, after handing
  malloc's free cache back to the system (`malloc_trim`); memory a backend
  keeps in its own pools is not seen (Linux only, else "-");
- `kb.uncertainty.mc_predict` with S samples against S passes of
  `model.predict` and against S passes of `predict_on_batch` (the same
  compiled step without `predict`'s per-call data pipeline);
- when installed, TensorFlow Probability's `tfp.layers` under `tf_keras`
  and bayesian-torch, each against its own framework's plain layer, in
  separate processes; and, in the PyTorch process, keras-bayes'
  `Conv2DFlipout` against bayesian-torch's `Conv2dFlipout` in absolute
  time, interleaved.

Usage:
    python benchmarks/run.py                       # every backend
    python benchmarks/run.py --backends jax torch --repeats 60
    python benchmarks/run.py --quick               # tiny smoke run
"""

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
EXTERNAL = ("tfp", "bayesian_torch")


# Examples per batch of the dense workloads (`--dense-batch`).
DENSE_BATCH = 32


def workloads(quick=False):
    """Layer kinds and their sizes: `{kind: dict}`.

    The conv workload is N=32 examples of 32x32x16 into a 3x3 convolution
    with 32 filters, padding "same" (`--quick`: N=2 of 6x6x2, 4 filters).
    """
    if quick:
        conv = {"batch": 2, "size": 6, "channels": 2, "filters": 4}
        dense = {"batch": 2, "features": 8, "units": 4}
        members = 2
    else:
        conv = {"batch": 32, "size": 32, "channels": 16, "filters": 32}
        dense = {"batch": DENSE_BATCH, "features": 1024, "units": 512}
        members = 4
    return {
        "Conv2DReparameterization": dict(conv, family="conv"),
        "Conv2DFlipout": dict(conv, family="conv"),
        "Conv2DTransposeFlipout": dict(conv, family="conv_transpose"),
        "DenseFlipout": dict(dense, family="dense"),
        "DenseLocalReparameterization": dict(dense, family="dense"),
        "BatchedConv2D": dict(conv, family="batched", members=members),
    }


def _medians(steps, repeats, warmup):
    """Medians of interleaved timings of several callables (seconds).

    Every repeat runs each step once; the order is reversed every other
    repeat, so that no step always follows the same one.
    """
    for _ in range(warmup):
        for step in steps:
            step()
    times = [[] for _ in steps]
    for i in range(repeats):
        order = list(zip(steps, times))
        if i % 2:
            order = order[::-1]
        for step, record in order:
            start = time.perf_counter()
            step()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def _median_pair(step_a, step_b, repeats, warmup):
    """Medians of interleaved timings of two callables (seconds)."""
    return tuple(_medians((step_a, step_b), repeats, warmup))


def _ratios(kind, train, infer):
    """A result row from `(Bayesian, reference)` median train/infer times."""
    return {
        "kind": kind,
        "train_ratio": train[0] / train[1],
        "infer_ratio": infer[0] / infer[1],
        "train_ms": [1e3 * t for t in train],
        "infer_ms": [1e3 * t for t in infer],
    }


def _read_status_kib(field):
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_heap():
    # Hands memory that malloc keeps cached back to the system, so that a
    # step's working memory shows as RSS growth instead of reused cache.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_step_memory_mib(step, repeats=3):
    """Growth of the peak RSS over the RSS before `step` (MiB), or None."""
    gc.collect()
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _read_status_kib("VmRSS")
    for _ in range(repeats):
        step()
    peak = _read_status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1024.0


# -- keras-bayes (any Keras 3 backend) ----------------------------------


def _keras_layers(kind, spec):
    """`(bayesian layer, reference layer, input shape)`."""
    import keras

    import keras_bayes as kb

    family = spec["family"]
    if family == "dense":
        bayes_cls = getattr(kb.layers, kind)
        return (
            bayes_cls(spec["units"], seed=1),
            keras.layers.Dense(spec["units"]),
            (spec["features"],),
        )
    shape = (spec["size"], spec["size"], spec["channels"])
    conv = {"kernel_size": 3, "padding": "same"}
    filters = spec["filters"]
    if family == "batched":
        # One weight set per member, the input shared by all: the same
        # arithmetic as one convolution with members * filters outputs.
        members = spec["members"]
        return (
            kb.layers.BatchedConv2D(filters, batch_shape=(members,), **conv),
            keras.layers.Conv2D(members * filters, **conv),
            shape,
        )
    reference = (
        keras.layers.Conv2DTranspose
        if family == "conv_transpose"
        else keras.layers.Conv2D
    )
    return (
        getattr(kb.layers, kind)(filters, seed=1, **conv),
        reference(filters, **conv),
        shape,
    )


# `model.compile(jit_compile=...)` of the Keras models (`--jit-compile`).
JIT_COMPILE = "auto"


def _keras_model(layer, input_shape):
    import keras

    inputs = keras.Input(shape=input_shape)
    model = keras.Model(inputs, layer(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-3),
        loss="mse",
        jit_compile=JIT_COMPILE,
    )
    return model


def measure_keras(quick=False, repeats=30, warmup=5, kinds=None):
    """Ratios of keras-bayes layers to Keras layers on the current backend.

    Returns a list of dicts with `kind`, `train_ratio`, `infer_ratio`,
    `train_ms` / `infer_ms` (Bayesian, reference), `memory_mib` (peak
    growth of one training step, Bayesian and reference) and `jit`.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    results = []
    for kind, spec in workloads(quick).items():
        if kinds and kind not in kinds:
            continue
        bayes_layer, ref_layer, input_shape = _keras_layers(kind, spec)
        bayes = _keras_model(bayes_layer, input_shape)
        ref = _keras_model(ref_layer, input_shape)
        x = rng.normal(size=(spec["batch"],) + input_shape).astype("float32")
        # Contiguous targets for both: a broadcast (stride-0) view would be
        # copied, or read through its strides, on every step.
        y_bayes = np.zeros((spec["batch"],) + bayes.output_shape[1:], "float32")
        y_ref = np.zeros((spec["batch"],) + ref.output_shape[1:], "float32")

        def train_bayes(x=x, y=y_bayes, model=bayes):
            model.train_on_batch(x, y)

        def train_ref(x=x, y=y_ref, model=ref):
            model.train_on_batch(x, y)

        def infer_bayes(x=x, model=bayes):
            model.predict_on_batch(x)

        def infer_ref(x=x, model=ref):
            model.predict_on_batch(x)

        train = _median_pair(train_bayes, train_ref, repeats, warmup)
        infer = _median_pair(infer_bayes, infer_ref, repeats, warmup)
        memory = (
            _peak_step_memory_mib(train_bayes),
            _peak_step_memory_mib(train_ref),
        )
        results.append(
            dict(
                _ratios(kind, train, infer),
                memory_mib=memory,
                jit=bool(bayes.jit_compile),
            )
        )
        del bayes, ref
        keras.backend.clear_session()
    return results


def measure_mc_predict(quick=False, repeats=5, num_samples=10):
    """`mc_predict` with S samples against S single passes.

    Returns a dict: `vs_predict` (time of `mc_predict` over S times one
    `model.predict(x)`), `vs_predict_on_batch` (over S passes of
    `predict_on_batch`, the compiled step alone) and the times in ms.
    """
    import keras
    import numpy as np

    import keras_bayes as kb

    spec = workloads(quick)["Conv2DFlipout"]
    num_samples = 2 if quick else num_samples
    count = 2 * spec["batch"]
    layer, _, input_shape = _keras_layers("Conv2DFlipout", spec)
    model = _keras_model(layer, input_shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count,) + input_shape).astype("float32")
    batch = spec["batch"]

    def mc():
        kb.uncertainty.mc_predict(
            model, x, num_samples=num_samples, batch_size=batch, verbose=0
        )

    def predict():
        model.predict(x, batch_size=batch, verbose=0)

    def on_batch():
        for start in range(0, count, batch):
            model.predict_on_batch(x[start : start + batch])

    # mc_predict against one pass, each repeat interleaved.
    mc_time, predict_time = _median_pair(mc, predict, repeats, 2)
    _, on_batch_time = _median_pair(mc, on_batch, repeats, 2)
    keras.backend.clear_session()
    return {
        "num_samples": num_samples,
        "vs_predict": mc_time / (num_samples * predict_time),
        "vs_predict_on_batch": mc_time / (num_samples * on_batch_time),
        "mc_ms": 1e3 * mc_time,
        "predict_ms": 1e3 * predict_time,
        "on_batch_ms": 1e3 * on_batch_time,
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
    rng = np.random.default_rng(0)
    results = []
    for kind, spec in workloads(quick).items():
        if kind not in pairs:
            continue
        bayes_cls, ref_cls = pairs[kind]
        if spec["family"] == "dense":
            args, kwargs = (spec["units"],), {}
            input_shape = (spec["features"],)
        else:
            args = (spec["filters"],)
            kwargs = {"kernel_size": 3, "padding": "same"}
            input_shape = (spec["size"], spec["size"], spec["channels"])
        models = []
        for cls in (bayes_cls, ref_cls):
            model = tf_keras.Sequential(
                [tf_keras.Input(shape=input_shape), cls(*args, **kwargs)]
            )
            model.compile(
                optimizer=tf_keras.optimizers.SGD(learning_rate=1e-3),
                loss="mse",
            )
            models.append(model)
        x = rng.normal(size=(spec["batch"],) + input_shape).astype("float32")
        y = np.zeros((spec["batch"],) + models[1].output_shape[1:], "float32")
        train = _median_pair(
            lambda m=models[0], x=x, y=y: m.train_on_batch(x, y),
            lambda m=models[1], x=x, y=y: m.train_on_batch(x, y),
            repeats,
            warmup,
        )
        infer = _median_pair(
            lambda m=models[0], x=x: m.predict_on_batch(x),
            lambda m=models[1], x=x: m.predict_on_batch(x),
            repeats,
            warmup,
        )
        results.append(_ratios(kind, train, infer))
        tf_keras.backend.clear_session()
    return results


# -- bayesian-torch ---------------------------------------------------------


def measure_bayesian_torch(quick=False, repeats=30, warmup=5):
    """bayesian-torch layers against `torch.nn` layers, plain torch loop."""
    import torch
    from bayesian_torch import layers as bt

    pairs = {
        "Conv2DReparameterization": (bt.Conv2dReparameterization, "conv"),
        "Conv2DFlipout": (bt.Conv2dFlipout, "conv"),
        "Conv2DTransposeFlipout": (bt.ConvTranspose2dFlipout, "transpose"),
        "DenseFlipout": (bt.LinearFlipout, "dense"),
    }
    torch.manual_seed(0)
    results = []
    for kind, spec in workloads(quick).items():
        if kind not in pairs:
            continue
        bayes_cls, family = pairs[kind]
        if family == "dense":
            features, units = spec["features"], spec["units"]
            bayes = bayes_cls(features, units)
            ref = torch.nn.Linear(features, units)
            x = torch.randn(spec["batch"], features)
        else:
            channels, filters = spec["channels"], spec["filters"]
            if family == "transpose":
                bayes = bayes_cls(channels, filters, 3, padding=1)
                ref = torch.nn.ConvTranspose2d(channels, filters, 3, padding=1)
            else:
                bayes = bayes_cls(channels, filters, 3, padding=1)
                ref = torch.nn.Conv2d(channels, filters, 3, padding=1)
            size = spec["size"]
            x = torch.randn(spec["batch"], channels, size, size)

        def step(model, bayesian, train, x=x, optimizers=None):
            if not train:
                with torch.no_grad():
                    model(x)
                return
            optimizer = optimizers[id(model)]
            optimizer.zero_grad()
            if bayesian:
                out, kl = model(x)
                loss = torch.mean(torch.square(out)) + kl
            else:
                loss = torch.mean(torch.square(model(x)))
            loss.backward()
            optimizer.step()

        optimizers = {
            id(m): torch.optim.SGD(m.parameters(), lr=1e-3)
            for m in (bayes, ref)
        }
        try:
            step(bayes, True, True, optimizers=optimizers)
        except RuntimeError as error:
            # Reported in the table as a failure of that library's layer.
            results.append({"kind": kind, "error": str(error)[:200]})
            continue
        train = _median_pair(
            lambda b=bayes, o=optimizers: step(b, True, True, optimizers=o),
            lambda r=ref, o=optimizers: step(r, False, True, optimizers=o),
            repeats,
            warmup,
        )
        infer = _median_pair(
            lambda b=bayes: step(b, True, False),
            lambda r=ref: step(r, False, False),
            repeats,
            warmup,
        )
        results.append(_ratios(kind, train, infer))
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

    spec = workloads(quick)["Conv2DFlipout"]
    layer, ref_layer, input_shape = _keras_layers("Conv2DFlipout", spec)
    kb_model = _keras_model(layer, input_shape)
    keras_ref = _keras_model(ref_layer, input_shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(spec["batch"],) + input_shape).astype("float32")
    y = np.zeros((spec["batch"],) + keras_ref.output_shape[1:], "float32")

    channels, filters = spec["channels"], spec["filters"]
    bt_model = bt.Conv2dFlipout(channels, filters, 3, padding=1)
    torch_ref = torch.nn.Conv2d(channels, filters, 3, padding=1)
    x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=1e-3) for m in (bt_model, torch_ref)
    ]

    def bt_step():
        optimizers[0].zero_grad()
        out, kl = bt_model(x_torch)
        (torch.mean(torch.square(out)) + kl).backward()
        optimizers[0].step()

    def torch_step():
        optimizers[1].zero_grad()
        torch.mean(torch.square(torch_ref(x_torch))).backward()
        optimizers[1].step()

    # The keras-bayes layer in the plain loop: channels_last input, its own
    # KL from `layer.losses`.
    loop_layer, _, _ = _keras_layers("Conv2DFlipout", spec)
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

    times = _medians(
        [
            lambda: kb_model.train_on_batch(x, y),
            lambda: keras_ref.train_on_batch(x, y),
            bt_step,
            torch_step,
            kb_loop_step,
        ],
        repeats,
        warmup,
    )
    names = (
        "keras_bayes",
        "keras_conv2d",
        "bayesian_torch",
        "torch_conv2d",
        "keras_bayes_loop",
    )
    results = {f"{name}_ms": 1e3 * t for name, t in zip(names, times)}
    results["keras_bayes_ratio"] = times[0] / times[1]
    results["bayesian_torch_ratio"] = times[2] / times[3]
    results["keras_bayes_loop_ratio"] = times[4] / times[3]
    results["speedup"] = times[2] / times[0]
    results["loop_speedup"] = times[2] / times[4]
    return results


# -- driver -----------------------------------------------------------------


def _worker(args):
    global DENSE_BATCH, JIT_COMPILE
    DENSE_BATCH = args.dense_batch
    JIT_COMPILE = {"auto": "auto", "true": True, "false": False}[
        args.jit_compile
    ]
    if args.no_channels_view:
        import keras_bayes as kb

        kb.config.set_torch_channels_view(False)
    if args.worker in BACKENDS:
        results = {
            "layers": measure_keras(
                args.quick, args.repeats, args.warmup, args.kinds
            ),
            "mc_predict": None
            if args.no_mc_predict
            else measure_mc_predict(args.quick),
        }
        if args.worker == "torch" and _installed("bayesian_torch"):
            results["torch_flipout"] = compare_torch_flipout(
                args.quick, args.repeats, args.warmup
            )
    elif args.worker == "tfp":
        results = {"layers": measure_tfp(args.quick, args.repeats, args.warmup)}
    else:
        results = {
            "layers": measure_bayesian_torch(
                args.quick, args.repeats, args.warmup
            )
        }
    print("RESULT " + json.dumps(results))


def _versions():
    import importlib.metadata as metadata

    versions = {}
    for package in (
        "keras",
        "tensorflow-cpu",
        "tensorflow",
        "jax",
        "torch",
        "tensorflow-probability",
        "tf-keras",
        "bayesian-torch",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _installed(worker):
    import importlib.util

    modules = {
        "tfp": ("tensorflow_probability", "tf_keras"),
        "bayesian_torch": ("bayesian_torch", "torch"),
    }[worker]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _run_worker(worker, args):
    env = dict(os.environ)
    if worker in BACKENDS:
        env["KERAS_BACKEND"] = worker
    if worker == "tfp":
        env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        worker,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    if args.quick:
        command.append("--quick")
    if args.kinds:
        command += ["--kinds", *args.kinds]
    if args.no_mc_predict:
        command.append("--no-mc-predict")
    if args.no_channels_view:
        command.append("--no-channels-view")
    command += ["--jit-compile", args.jit_compile]
    command += ["--dense-batch", str(args.dense_batch)]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    process = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(process.stderr[-3000:])
    raise RuntimeError(f"benchmark worker {worker!r} failed")


def _fmt(value, digits=2, suffix="x"):
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def format_table(by_backend, external):
    """Markdown table of training and inference ratios."""
    kinds = [
        kind
        for kind in workloads()
        if any(
            r["kind"] == kind for b in by_backend.values() for r in b["layers"]
        )
    ]
    backends = list(by_backend)
    header = ["layer"]
    for backend in backends:
        header += [f"{backend} train", f"{backend} infer"]
    columns = {"tfp": "TFP (tf_keras)", "bayesian_torch": "bayesian-torch"}
    for name in external:
        header += [f"{columns[name]} train", f"{columns[name]} infer"]
    rows = ["| " + " | ".join(header) + " |"]
    rows.append("|" + "---|" * len(header))
    sources = [by_backend[b]["layers"] for b in backends]
    sources += [external[name]["layers"] for name in external]
    for kind in kinds:
        cells = [kind]
        for results in sources:
            match = [r for r in results if r["kind"] == kind]
            if match and "error" in match[0]:
                cells += ["fails", "fails"]
            elif match:
                cells += [
                    _fmt(match[0]["train_ratio"]),
                    _fmt(match[0]["infer_ratio"]),
                ]
            else:
                cells += ["n/a", "n/a"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def format_details(by_backend):
    rows = [
        "| backend | layer | train ms (Bayes / ref) | infer ms (Bayes / "
        "ref) | peak step memory MiB (Bayes / ref) | jit |",
        "|---|---|---|---|---|---|",
    ]
    for backend, results in by_backend.items():
        for r in results["layers"]:
            memory = " / ".join(
                "-" if m is None else f"{m:.1f}" for m in r["memory_mib"]
            )
            rows.append(
                f"| {backend} | {r['kind']} | "
                f"{r['train_ms'][0]:.2f} / {r['train_ms'][1]:.2f} | "
                f"{r['infer_ms'][0]:.2f} / {r['infer_ms'][1]:.2f} | "
                f"{memory} | {r['jit']} |"
            )
    mc_rows = [r["mc_predict"] for r in by_backend.values() if r["mc_predict"]]
    if not mc_rows:
        return "\n".join(rows)
    rows.append("")
    rows.append(
        "| backend | mc_predict S | mc_predict ms | / (S x predict) | "
        "/ (S x predict_on_batch pass) |"
    )
    rows.append("|---|---|---|---|---|")
    for backend, results in by_backend.items():
        mc = results["mc_predict"]
        if mc is None:
            continue
        rows.append(
            f"| {backend} | {mc['num_samples']} | {mc['mc_ms']:.1f} | "
            f"{_fmt(mc['vs_predict'])} | {_fmt(mc['vs_predict_on_batch'])} |"
        )
    return "\n".join(rows)


def format_torch_comparison(by_backend):
    """One line on keras-bayes against bayesian-torch, or ''."""
    rows = []
    for results in by_backend.values():
        torch_flipout = results.get("torch_flipout")
        if not torch_flipout:
            continue
        t = torch_flipout
        rows.append("")
        rows.append(
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
    return "\n".join(rows)


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument(
        "--kinds", nargs="+", choices=list(workloads()), help="layer kinds"
    )
    parser.add_argument(
        "--no-mc-predict", action="store_true", help="skip mc_predict"
    )
    parser.add_argument(
        "--dense-batch",
        type=int,
        default=DENSE_BATCH,
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
        choices=("auto", "true", "false"),
        default="auto",
        help="jit_compile of the Keras models (default: Keras' own choice, "
        "what `fit` does)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--worker", choices=BACKENDS + EXTERNAL, help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse_args(argv)
    if args.worker:
        _worker(args)
        return
    by_backend = {}
    for backend in args.backends:
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        by_backend[backend] = _run_worker(backend, args)
    external = {}
    if not args.no_external:
        for name in EXTERNAL:
            if not _installed(name):
                print(f"note: {name} is not installed; skipped.")
                continue
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            external[name] = _run_worker(name, args)
    print(f"Versions: {_versions()}; CPU cores: {os.cpu_count()}")
    print("Median step time, Bayesian / matching deterministic layer:")
    print(format_table(by_backend, external))
    print()
    print(format_details(by_backend))
    comparison = format_torch_comparison(by_backend)
    if comparison:
        print(comparison)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"keras": by_backend, "external": external}, out, indent=1
            )


if __name__ == "__main__":
    main()
