"""Speed of keras-explainable's methods, as a ratio to ``model.predict``, on one backend.

Run it once per backend, each in its own process (``benchmarks/run_all.sh`` runs all three)::

    KERAS_BACKEND=jax python benchmarks/benchmark.py                 # ResNet50V2, 16 x 224 x 224
    KERAS_BACKEND=torch python benchmarks/benchmark.py --model small --repeats 9

What is timed, on the same random batch, in one process:

- ``predict``: ``model.predict(x, batch_size=B, verbose=0)``, the reference;
- ``gradcam`` / ``gradients``: ``ke.gradcam`` / ``ke.gradients(model, x, y, batch_size=B,
  verbose=0)``, the public API (engine + compiled step + numpy results);
- diagnostics, to see where the overhead comes from:
  ``forward step``: one forward pass compiled the way our step is compiled
  (``ke.backend.compile`` of ``ke.backend.forward``; tf.function / jax.jit / eager torch
  under ``no_grad``), ``gradcam step`` / ``gradients step``: the cached compiled explaining
  step called directly on tensors (no data handling, no progress bar, no checks), and
  ``input grad (native)``: the input gradient written directly in the framework (the lower
  bound for ``gradients``).

Every case is called once first (its first-call time, which includes tracing and
compilation, is reported separately), then the cases are run ``--repeats`` times
interleaved (predict, gradcam, gradients, ..., predict, gradcam, ...) so that a change
in the machine's load hits every case alike. The tables report the median, the spread
(min-max and the inter-quartile range relative to the median) and the ratio to
``predict`` (median of the per-round ratios, each taken within one round; the targets
are checked on it) next to the ratio of the fastest times (the least disturbed by
other load). On a busy machine, ``--threads 1`` gives much steadier numbers (PyTorch's
OpenMP threads degrade badly when the cores are oversubscribed).

``--methods targets`` times Grad-CAM and Gradients with ``ke.targets.output(name)`` and
with a custom target function, interleaved with the same methods and the default target
(every other round in reverse order), and reports each as a ratio to its default, round by
round (target: <= 1.05).

``--methods all`` times every shortcut of the package instead (``ke.gradients``,
``gradients_x_inputs``, ``integrated_gradients`` with ``n_steps=16``, ``full_gradients``,
SmoothGrad with 8 repetitions, ``cam``, ``gradcam``, ``gradcampp``, ``xgradcam``,
``layercam``, ``hirescam``, ``eigencam``, ``scorecam``, ``ablationcam``, ``occlusion``,
``rise`` with 256 masks), each as a ratio to ``predict``, and the perturbation methods also
against their LIMIT: the ``ceil(N / chunk_size)`` forward passes of ``batch * chunk_size``
inputs they cannot avoid (``N``: the masks, channels or windows per sample), timed with the
compiled forward step. Its defaults are ``--model small --batch 8``: Score-CAM on ResNet50V2
at 224 px runs 2048 forward passes per sample (hours on a small CPU).

The results go to ``benchmarks/results/<backend>[-<model>].json`` and ``.md``.

``TF_ENABLE_ONEDNN_OPTS`` defaults to ``0`` here as in the test-suite (TF 2.21 crashes in
some eager conv gradients on this project's CPUs with oneDNN on); set it to ``1`` in the
environment to measure TF with oneDNN.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _thread_limit(argv):
    """``--threads N`` must act before a framework starts its thread pools (at import)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, default=None)
    threads = parser.parse_known_args(argv)[0].threads
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[name] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
        # LAPACK calls (Eigen-CAM's SVD on JAX goes through scipy's OpenBLAS) on tiny
        # matrices: OpenBLAS' spinning threads made them 10-100x slower and erratic on a
        # busy machine (0.05 s -> 0.3-9 s per call), so they get one thread.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        if threads == 1:  # XLA:CPU has no thread-count flag, only "one thread or all"
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (
                f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            ).strip()
    return threads


THREADS = _thread_limit(sys.argv[1:])

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_explainable as ke  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
import text_cases  # noqa: E402
import vit_cases  # noqa: E402

BACKEND = keras.backend.backend()
if THREADS and BACKEND == "torch":
    import torch

    torch.set_num_threads(THREADS)
HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"gradcam": 1.1, "gradients": 3.0, **text_cases.TARGETS, **vit_cases.TARGETS}
# Perturbation methods against the forward passes they cannot avoid (see ``limit_cases``).
# Ablation-CAM has no row there: on these models it runs only the layers after the explained
# one (pooling and the classifier), far below one forward pass per ablation, so it is only
# compared with predict.
LIMIT_TARGETS = {"scorecam": 1.2}
# ``--methods targets``: a method with a ``ke.targets`` target against the same method with
# the default target, interleaved in one run (a target is compiled into the step: no extra pass).
TARGET_OVERHEAD = 1.05
CHUNK_SIZES = {"scorecam": 8, "ablationcam": 8, "occlusion": 16, "rise": 16}
# The settings of the costly methods for ``--methods all``, per model. ResNet50V2's last block
# has 2048 channels and its inputs 224 x 224 pixels: Score-CAM over every channel, occlusion
# with 8-pixel windows every 4 pixels (3025 windows) or RISE with 256 masks would take hours
# on a small CPU, so they run with few perturbations there (stated in the tables), and
# are compared with the limit of that many perturbations; integrated gradients and
# SmoothGrad, which cost one gradient per copy, run with few copies too.
SETTINGS = {
    "small": {
        "ig_steps": 16,
        "smooth_repetitions": 8,
        "scorecam_channels": None,  # every channel (64)
        "occlusion": {},  # the defaults: 8 x 8 windows every 4 pixels
        "rise_masks": 256,
    },
    "resnet50v2": {  # a few copies / perturbations: their cost per copy is what is measured
        "ig_steps": 4,
        "smooth_repetitions": 2,
        "scorecam_channels": 8,  # top_n: Faster Score-CAM over (about) 8 channels
        "occlusion": {"window": 112, "stride": 112},  # 4 windows
        "rise_masks": 8,  # Ablation-CAM: all 2048 channels (it runs only the model's head)
    },
}


# ----------------------------------------------------------------------------- models
EXPLAINED_LAYER = {"resnet50v2": "post_relu", "small": "last_conv"}


def build_model(name: str, seed: int, size: int | None = None):
    """The benchmarked model (random weights, nothing is downloaded) and its input size.

    ``size``: the input side of the small CNN (default 64); ResNet50V2 takes 224.

    ``EXPLAINED_LAYER[name]`` names the layer whose output our CAM methods explain by
    default (the input of the global pooling); tf-keras-vis is pointed at it.
    """
    if BACKEND == "tensorflow":
        keras.utils.set_random_seed(seed)
    else:  # keras.utils.set_random_seed imports TensorFlow: seed what Keras draws from
        random.seed(seed)  # Keras' unseeded initializers draw their seeds from here
        np.random.seed(seed)
    if name == "resnet50v2":
        model = keras.applications.ResNet50V2(weights=None, classifier_activation=None)
        return model, 224
    if name == "small":
        size = size or 64  # fully convolutional up to its global pooling: any size works
        inputs = keras.Input((size, size, 3))
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(
            64, 3, strides=2, padding="same", activation="relu", name="last_conv"
        )(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        outputs = keras.layers.Dense(10)(h)
        return keras.Model(inputs, outputs, name="small_cnn"), size
    raise ValueError(f"Unknown model {name!r}; use 'resnet50v2' or 'small'.")


# ----------------------------------------------------------------------- native code
def native_input_gradient(model):
    """``d logits[b, y_b] / d x`` written directly in the framework, compiled like predict."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def grad(x, idx):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                logits = model(x, training=False)
                score = tf.reduce_sum(tf.gather(logits, idx, batch_dims=1))
            return tape.gradient(score, x)

        return grad
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def score(x, tv, ntv, idx):
            logits, _ = model.stateless_call(tv, ntv, x, training=False)
            return jnp.sum(jnp.take_along_axis(logits, idx, axis=1))

        jitted = jax.jit(jax.grad(score))

        def grad(x, idx):
            # Read the values at each call: Keras' JAX predict donates the old buffers.
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            return jitted(x, trainable, non_trainable, idx)

        return grad
    import torch

    def grad(x, idx):
        x = x.detach().requires_grad_(True)
        logits = model(x, training=False)
        score = torch.gather(logits, 1, idx.long()).sum()
        return torch.autograd.grad(score, x)[0]

    return grad


def forward_step(model, jit_compile=None):
    """One forward pass compiled the way ``ke.explain`` compiles its step."""
    if jit_compile is None:
        jit_compile = BACKEND == "jax"  # the engine's default
    return ke.backend.compile(
        lambda x: ke.backend.forward(model, x)[0], model, jit_compile=jit_compile
    )


def cached_step(model, method, jit_compile=None, **params):
    """The compiled step that ``ke.<method>`` cached (None if the engine changed)."""
    try:
        from keras_explainable.engine.explaining import get_step

        return get_step(
            model, method, jit_compile=jit_compile, spatial_axis=ke.filters.SPATIAL_AXIS, **params
        )
    except Exception as error:  # an internal API: the benchmark must not depend on it
        print(f"(no direct step timing: {error})", file=sys.stderr)
        return None


def to_numpy(value):
    """Block until the result exists (JAX dispatches asynchronously)."""
    if isinstance(value, (list, tuple)):
        return [to_numpy(v) for v in value]
    return ops.convert_to_numpy(value)


# ---------------------------------------------------------------------------- running
def public_cases(model, x, y, batch, jit_compile=None):
    """The reference and the two targets, through the public API."""
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    return {
        "predict": lambda: model.predict(x, batch_size=batch, verbose=0),
        "gradcam": lambda: ke.gradcam(model, x, y, batch_size=batch, verbose=0, **options),
        "gradients": lambda: ke.gradients(model, x, y, batch_size=batch, verbose=0, **options),
    }


def all_cases(model, x, y, batch, settings, jit_compile=None):
    """Every shortcut of the package (``--methods all``), through the public API.

    ``settings``: one of ``SETTINGS`` (with ``scorecam_channels`` possibly changed to match
    tf-keras-vis' Faster Score-CAM); methods that it turns off are left out.
    """
    options = {"batch_size": batch, "verbose": 0}
    if jit_compile is not None:
        options["jit_compile"] = jit_compile
    smoothgrad = ke.partial_explain(  # ke.smoothgrad with fewer repetitions than 20
        ke.methods.meta.smooth(
            ke.methods.gradient.gradients, repetitions=settings["smooth_repetitions"], seed=0
        ),
        postprocessing=ke.filters.normalize,
        resizing=False,
    )
    chunk = CHUNK_SIZES
    specs = [
        ("gradients", ke.gradients, {}),
        ("gradients_x_inputs", ke.gradients_x_inputs, {}),
        ("integrated_gradients", ke.integrated_gradients, {"n_steps": settings["ig_steps"]}),
        ("full_gradients", ke.full_gradients, {}),
        ("smoothgrad", smoothgrad, {}),
        ("cam", ke.cam, {}),
        ("gradcam", ke.gradcam, {}),
        ("gradcampp", ke.gradcampp, {}),
        ("xgradcam", ke.xgradcam, {}),
        ("layercam", ke.layercam, {}),
        ("hirescam", ke.hirescam, {}),
        ("eigencam", ke.eigencam, {}),
        (
            "scorecam",
            ke.scorecam,
            {"chunk_size": chunk["scorecam"], "top_n": settings["scorecam_channels"]},
        ),
        ("ablationcam", ke.ablationcam, {"chunk_size": chunk["ablationcam"]}),
        ("occlusion", ke.occlusion, {"chunk_size": chunk["occlusion"], **settings["occlusion"]}),
        (
            "rise",
            ke.rise,
            {"masks": settings["rise_masks"], "seed": 0, "chunk_size": chunk["rise"]},
        ),
    ]
    cases = {"predict": lambda: model.predict(x, batch_size=batch, verbose=0)}
    for name, shortcut, params in specs:
        cases[name] = lambda f=shortcut, p=params: f(model, x, y, **options, **p)
    return cases


def target_cases(model, x, y, batch, jit_compile=None):
    """Grad-CAM and Gradients with the default target, ``ke.targets.output`` and a function.

    ``output(name)`` picks the model's (only) output by its name and gathers its classes;
    the custom target is a plain function doing the same gather. Each is compared with the
    same method and the default target, round by round (``target_ratios`` of the report).
    """
    options = {"batch_size": batch, "verbose": 0}
    if jit_compile is not None:
        options["jit_compile"] = jit_compile
    output = ke.targets.output(model.output_names[0])

    def custom(outputs, units):  # the classes, gathered by hand
        return ops.take_along_axis(outputs, units, axis=-1)

    cases = {"predict": lambda: model.predict(x, batch_size=batch, verbose=0)}
    for name, shortcut in (("gradcam", ke.gradcam), ("gradients", ke.gradients)):
        cases[name] = lambda f=shortcut: f(model, x, y, **options)
        for label, target in (("output", output), ("custom", custom)):
            cases[f"{name}[{label}]"] = lambda f=shortcut, t=target: f(
                model, x, y, target=t, **options
            )
    return cases


def _target_ratios(times) -> dict:
    """``method[target]`` time / ``method`` time, per round: the price of the target."""
    ratios = {}
    for name, values in times.items():
        if "[" not in name:
            continue
        base = name.split("[")[0]
        per_round = [t / b for t, b in zip(values, times[base])]
        ratios[name] = {
            "default": base,
            "ratio_median": statistics.median(per_round),
            "ratio_min": min(per_round),
            "ratio_max": max(per_round),
            "ratios": per_round,
        }
    return ratios


def _fit_step_cache(size):
    """Let the engine keep one compiled step per timed method.

    ``ke.explain`` keeps the last few compiled steps of each model (an LRU cache); with
    more methods than that, interleaved rounds would evict and recompile every step on
    every call and time compilation instead of explaining. An internal setting: if it
    is gone, the run goes on (and the first-call column tells whether steps recompile).
    """
    try:
        from keras_explainable.engine import step

        if step._CACHE_SIZE < size:
            print(f"  (engine step cache {step._CACHE_SIZE} -> {size} for this run)")
            step._CACHE_SIZE = size
    except (ImportError, AttributeError) as error:
        print(f"(could not enlarge the step cache: {error})", file=sys.stderr)


def explained_activations(model, x):
    """The activation our CAM methods explain, for the batch ``x``, as numpy."""
    taps = ke.inspection.activation_taps(model, x.shape[1:])
    _, values = ke.backend.forward(model, ops.convert_to_tensor(x), taps)
    return to_numpy(values[0])


def perturbations_per_sample(model, x, settings):
    """How many perturbed forward passes per sample each perturbation method needs."""
    channels = int(explained_activations(model, x[:1]).shape[-1])
    windows = ke.methods.perturbation.occlusion_windows(x.shape[1:-1], **settings["occlusion"])
    counts = {
        "scorecam": settings["scorecam_channels"] or channels,  # one per channel
        "occlusion": int(np.prod([len(w) for w in windows])),
        "rise": settings["rise_masks"],
    }
    return counts


def limit_cases(model, x, settings, jit_compile=None, methods=None):
    """The forward passes a perturbation method cannot avoid, compiled like our step.

    For ``N`` perturbations per sample at ``chunk_size`` per pass: ``ceil(N / chunk_size)``
    calls of the compiled forward step on ``batch * chunk_size`` inputs (the method pads N
    to whole chunks too). Returns ``(cases, limits)``: the timed cases and, for each method,
    the name of its limit case and how it was counted.
    """
    forward = forward_step(model, jit_compile)
    counts = perturbations_per_sample(model, x, settings)
    cases, limits = {}, {}
    for method, count in counts.items():
        if methods is not None and method not in methods:
            continue
        chunk = min(CHUNK_SIZES[method], count)
        passes = -(-count // chunk)
        rows = len(x) * chunk
        name = f"limit {passes} x fwd({rows})"
        if name not in cases:
            masked = ops.convert_to_tensor(np.repeat(x, chunk, axis=0))

            def run(masked=masked, passes=passes):
                for _ in range(passes):
                    out = forward(masked)
                return to_numpy(out)

            cases[name] = run
        limits[method] = {"case": name, "perturbations": count, "chunk": chunk, "passes": passes}
    return cases, limits


def diagnostic_cases(model, x, y, jit_compile=None):
    """Lower-level cases; call after the public ones ran (their steps are then cached)."""
    xt = ops.convert_to_tensor(x)
    yt = ops.convert_to_tensor(y.reshape(len(y), -1).astype("int32"))
    forward = forward_step(model, jit_compile)
    native = native_input_gradient(model)
    cases = {
        "forward step": lambda: to_numpy(forward(xt)),
        "input grad (native)": lambda: to_numpy(native(xt, yt)),
    }
    steps = {}
    for name, method, post, resizing in (
        ("gradcam", ke.methods.cams.gradcam, ke.filters.positive_normalize, True),
        ("gradients", ke.methods.gradient.gradients, ke.filters.normalize, False),
    ):
        step = cached_step(
            model, method, jit_compile=jit_compile, postprocessing=post, resizing=resizing
        )
        if step is not None:
            steps[name] = step
            cases[f"{name} step"] = lambda step=step: to_numpy(step(xt, yt))
    return cases, steps


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summarize(times, ratios=None):
    ordered = sorted(times)
    q1, _, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else (ordered * 3)
    median = statistics.median(ordered)
    result = {
        "median_s": median,
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "iqr_rel": (q3 - q1) / median if median else 0.0,
        "times_s": times,
    }
    if ratios is not None:
        result["ratio_median"] = statistics.median(ratios)
        result["ratio_min"] = min(ratios)
        result["ratio_max"] = max(ratios)
        result["ratios"] = ratios
    return result


def run(args):
    if args.methods == "text":  # token ids into a text classifier: see text_cases.py
        model, size = text_cases.build_model(args.seed), text_cases.LENGTH
        x, y = text_cases.inputs(args.batch, args.seed)
    elif args.methods == "vit":  # a ViT and the transformer methods: see vit_cases.py
        model, size = vit_cases.build_model(args.seed, blocks=args.vit_blocks)
        x, y = vit_cases.inputs(args.batch, args.seed, size)
    else:
        model, size = build_model(args.model, args.seed)
        rng = np.random.default_rng(args.seed)
        x = rng.uniform(-1.0, 1.0, (args.batch, size, size, 3)).astype("float32")
        classes = int(model.outputs[0].shape[-1])
        y = rng.integers(0, classes, (args.batch, args.units) if args.units > 1 else (args.batch,))

    load_before = os.getloadavg()
    started = time.perf_counter()
    settings = dict(SETTINGS.get(args.model, {}))  # none for --methods text
    if args.scorecam_channels is not None:
        settings["scorecam_channels"] = args.scorecam_channels or None
    peer_version, peer_scorecam = None, None
    if args.peers:
        peer_version, message = peers.available()
        print(f"  {message}", flush=True)
    if peer_version and args.methods == "all":
        # Their Faster Score-CAM masks the batch with the union of each sample's top
        # channels: pick their max_N and give our top_n that union's size, for equal work.
        max_n, k = peers.matching_scorecam(
            explained_activations(model, x), settings["scorecam_channels"]
        )
        channels = int(explained_activations(model, x[:1]).shape[-1])
        settings["scorecam_channels"] = None if k == channels else k
        peer_scorecam = {"max_n": max_n, "k": k, "top_n": settings["scorecam_channels"]}
    if args.methods == "all":
        cases = all_cases(model, x, y, args.batch, settings, args.jit_compile)
        if args.only:
            unknown = set(args.only) - set(cases)
            if unknown:
                raise SystemExit(f"--only: unknown methods {sorted(unknown)}; known: {list(cases)}")
            cases = {n: f for n, f in cases.items() if n == "predict" or n in args.only}
        _fit_step_cache(len(cases) + 4)
    elif args.methods == "targets":
        cases = target_cases(model, x, y, args.batch, args.jit_compile)
        _fit_step_cache(len(cases) + 4)
    elif args.methods == "text":
        cases = text_cases.cases(model, x, y, args.batch, args.jit_compile)
        cases.update(text_cases.generation_cases(jit_compile=args.jit_compile))
        _fit_step_cache(len(cases) + 4)
    elif args.methods == "vit":
        cases = vit_cases.cases(model, x, y, args.batch, args.jit_compile)
        _fit_step_cache(len(cases) + 4)
    else:
        cases = public_cases(model, x, y, args.batch, args.jit_compile)
    if peer_version:
        if args.units > 1:
            print("  (tf-keras-vis is compared with one unit per sample only)", flush=True)
            peer_version = None
        else:
            chunk = CHUNK_SIZES["scorecam"]
            cases.update(
                (name, fn)
                for name, fn in peers.peer_cases(
                    model,
                    x,
                    y,
                    EXPLAINED_LAYER[args.model],
                    peer_scorecam["max_n"] if peer_scorecam else None,
                    args.batch * chunk,
                ).items()
                if name in {peers.peer_name(m) for m in peers.PAIRS if m in cases}
            )
    first = {}

    def first_calls(names):
        for name in names:
            first[name] = timed(cases[name])
            print(f"  first call {name:<22s} {first[name]:8.3f} s", flush=True)

    first_calls(list(cases))
    steps = {}
    if args.diagnostics and args.methods == "vit":
        extra = vit_cases.diagnostic_cases(model, x, args.jit_compile)
        cases.update(extra)
        first_calls(list(extra))
    elif args.diagnostics and args.methods not in ("targets", "text"):
        extra, steps = diagnostic_cases(model, x, y, args.jit_compile)
        cases.update(extra)
        first_calls(list(extra))
    limits = {}
    if args.methods == "all":
        extra, limits = limit_cases(model, x, settings, args.jit_compile, methods=cases)
        cases.update(extra)
        first_calls(list(extra))
    for _ in range(args.warmup - 1):
        for fn in cases.values():
            fn()
    times = {name: [] for name in cases}
    for round_ in range(args.repeats):
        order = list(cases.items())
        if args.methods == "targets" and round_ % 2:
            order.reverse()  # a target runs before its default as often as after it
        for name, fn in order:
            times[name].append(timed(fn))
        line = "  ".join(f"{n}={t[-1]:.3f}" for n, t in times.items())
        print(f"  round {round_ + 1}/{args.repeats}: {line}", flush=True)
    load_after = os.getloadavg()

    results = {}
    for name, values in times.items():
        ratios = [t / p for t, p in zip(values, times["predict"])]
        results[name] = summarize(values, None if name == "predict" else ratios)
        results[name]["first_call_s"] = first[name]
    for method, limit in limits.items():
        ratios = [t / b for t, b in zip(times[method], times[limit["case"]])]
        limit["ratio_median"] = statistics.median(ratios)
        limit["ratio_min"] = min(ratios)
        limit["ratio_max"] = max(ratios)
        limit["ratio_best"] = results[method]["min_s"] / results[limit["case"]]["min_s"]
        limit["ratios"] = ratios
    comparison = {}
    if peer_version:
        comparison = {
            "version": peer_version,
            "scorecam": peer_scorecam,
            "pairs": peers.speedups(times, times["predict"]),
        }
    return {
        "backend": BACKEND,
        "model": args.model,
        "batch": args.batch,
        "input_size": size,
        "vit_blocks": args.vit_blocks if args.methods == "vit" else None,
        "methods": args.methods,
        "units_per_sample": args.units,
        "jit_compile": args.jit_compile,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "results": results,
        "traces": {name: {"traces": s.traces, "calls": s.calls} for name, s in steps.items()},
        "targets": TARGETS,
        "limits": limits,
        "limit_targets": LIMIT_TARGETS,
        "target_ratios": _target_ratios(times) if args.methods == "targets" else {},
        "text_ratios": text_cases.ratios(times) if args.methods == "text" else {},
        "target_overhead": TARGET_OVERHEAD,
        "settings": settings if args.methods == "all" else None,
        "chunk_sizes": CHUNK_SIZES if args.methods == "all" else None,
        "tf_keras_vis": comparison,
        "environment": {
            "keras": keras.__version__,
            "source": source_revision(),
            "backend_version": _backend_version(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "threads": THREADS,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "allocator": {  # glibc settings (README, Troubleshooting), when given
                name: os.environ[name]
                for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")
                if os.environ.get(name)
            },
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "wall_s": time.perf_counter() - started,
        },
    }


def source_revision() -> str:
    """The measured code: the git commit, ``+dirty`` when src/ has uncommitted changes."""
    import subprocess

    root = os.path.dirname(HERE)
    package = os.path.dirname(os.path.abspath(ke.__file__))
    if not package.startswith(os.path.join(root, "src")):
        # e.g. a snapshot of a commit on PYTHONPATH: say which, via BENCH_SOURCE
        return os.environ.get("BENCH_SOURCE", f"imported from {package}")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def _backend_version():
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[BACKEND]
    return __import__(module).__version__


# ---------------------------------------------------------------------------- reports
def markdown(report) -> str:
    r = report["results"]
    units = report["units_per_sample"]
    shape = f"{report['input_size']}x{report['input_size']}x3"
    if report["methods"] == "text":
        shape = f"{report['input_size']} token ids ({text_cases.__name__}.py)"
    if report.get("vit_blocks"):
        shape += f", {report['vit_blocks']} blocks"
    lines = [
        f"### {report['backend']} ({report['environment']['backend_version']}) — "
        f"{report['model']}, batch {report['batch']}, {shape}, "
        f"{units} unit{'s' if units > 1 else ''} per sample"
        + ("" if report["jit_compile"] is None else f", jit_compile={report['jit_compile']}"),
        "",
        f"median of {report['repeats']} interleaved rounds; load average "
        f"{report['environment']['loadavg_before'][0]:.2f} -> "
        f"{report['environment']['loadavg_after'][0]:.2f} on {report['environment']['cpus']} "
        f"CPUs; compute threads: {report['environment']['threads'] or 'default'}; allocator: "
        + (
            " ".join(f"{k}={v}" for k, v in report["environment"]["allocator"].items()) or "default"
        ),
        "",
        "| case | first call (s) | median (s) | min-max (s) | IQR | x predict (min-max) "
        "| x predict (best) | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in r.items():
        if name == "predict":
            ratio = "1.00"
        else:
            ratio = f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"<= {target} " + ("ok" if s["ratio_median"] <= target else "**missed**")
        best = s["min_s"] / r["predict"]["min_s"]
        lines.append(
            f"| {name} | {s['first_call_s']:.2f} | {s['median_s']:.3f} | "
            f"{s['min_s']:.3f}-{s['max_s']:.3f} | {100 * s['iqr_rel']:.0f}% | {ratio} | "
            f"{best:.2f} | {verdict} |"
        )
    lines += [
        "",
        "x predict: median of the per-round ratios (the target is checked on it); best: "
        "fastest time / fastest predict (the least disturbed by other load).",
    ]
    limits = report.get("limits") or {}
    if limits:
        lines += [
            "",
            "Perturbation methods against their limit: the forward passes they cannot avoid, "
            "ceil(N / chunk) passes of batch x chunk inputs through the compiled forward step "
            "(N perturbations per sample).",
            "",
            "| method | N | chunk | limit case | median (s) | limit median (s) "
            "| x limit (min-max) | x limit (best) | target |",
            "|---|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for method, limit in limits.items():
            target = LIMIT_TARGETS.get(method)
            verdict = ""
            if target is not None:
                ok = limit["ratio_median"] <= target
                verdict = f"<= {target} " + ("ok" if ok else "**missed**")
            lines.append(
                f"| {method} | {limit['perturbations']} | {limit['chunk']} | {limit['case']} | "
                f"{r[method]['median_s']:.3f} | {r[limit['case']]['median_s']:.3f} | "
                f"{limit['ratio_median']:.2f} ({limit['ratio_min']:.2f}-"
                f"{limit['ratio_max']:.2f}) | {limit['ratio_best']:.2f} | {verdict} |"
            )
    target_ratios = report.get("target_ratios") or {}
    if target_ratios:
        lines += [
            "",
            "With a target against the same method with the default target (per-round ratios "
            "of the interleaved rounds): `output` is ke.targets.output(name), `custom` a "
            "function gathering the classes.",
            "",
            "| case | x default (median) | min-max | x default (best) | target |",
            "|---|---:|---:|---:|---|",
        ]
        for name, ratio in target_ratios.items():
            ok = ratio["ratio_median"] <= report["target_overhead"]
            best = r[name]["min_s"] / r[ratio["default"]]["min_s"]
            lines.append(
                f"| {name} | {ratio['ratio_median']:.3f} | {ratio['ratio_min']:.2f}-"
                f"{ratio['ratio_max']:.2f} | {best:.3f} | <= {report['target_overhead']} "
                + ("ok" if ok else "**missed**")
                + " |"
            )
        lines += [
            "",
            "best: fastest time with the target / fastest time with the default target.",
        ]
    if report.get("text_ratios"):
        lines += text_cases.markdown(report["text_ratios"])
    settings = report.get("settings")
    if settings:
        occlusion = settings["occlusion"] or {"window": 8, "stride": 4}
        lines += [
            "",
            f"Settings: integrated_gradients n_steps={settings['ig_steps']}, smoothgrad "
            f"{settings['smooth_repetitions']} repetitions, scorecam top_n="
            f"{settings['scorecam_channels'] or 'None (every channel)'}, occlusion window "
            f"{occlusion['window']} stride {occlusion['stride']}, rise {settings['rise_masks']} "
            f"masks, ablationcam every channel; chunk sizes {report['chunk_sizes']}.",
        ]
    comparison = report.get("tf_keras_vis")
    if comparison:
        scorecam = comparison["scorecam"] or {"k": "-", "max_n": "-", "top_n": "-"}
        lines += peers.markdown(comparison["pairs"], comparison["version"], scorecam)
    if report["traces"]:
        traced = ", ".join(
            f"{n}: {t['traces']} trace(s) / {t['calls']} calls" for n, t in report["traces"].items()
        )
        lines += ["", f"compiled steps: {traced}"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--methods",
        choices=("core", "all", "targets", "text", "vit"),
        default="core",
        help="core: predict, gradcam, gradients (+ diagnostics); all: every shortcut, and the "
        "perturbation methods against their limit; targets: gradcam and gradients with "
        "ke.targets.output(name) and a custom target against the default target; text: the "
        "token methods on a text classifier and a generation attribution (text_cases.py); vit: "
        "Grad-CAM on tokens, attention rollout and transformer attribution on a ViT (vit_cases.py)",
    )
    parser.add_argument(
        "--vit-blocks",
        type=int,
        default=vit_cases.BLOCKS,
        help=f"--methods vit: the ViT's transformer blocks (default {vit_cases.BLOCKS}, "
        "ViT-Tiny/16's depth)",
    )
    parser.add_argument(
        "--model",
        choices=("resnet50v2", "small"),
        default=None,
        help="default: resnet50v2 for --methods core, small for --methods all",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="samples (one batch); default 16 (8 for all)"
    )
    parser.add_argument("--units", type=int, default=1, help="explained units per sample")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit the framework's compute threads (1 is steadier on a busy machine)",
    )
    parser.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="time only predict, gradcam and gradients",
    )
    parser.add_argument(
        "--jit-compile",
        choices=("default", "on", "off"),
        default="default",
        help="jit_compile of our steps (default: the engine's, XLA on JAX only)",
    )
    parser.add_argument(
        "--scorecam-channels",
        type=int,
        default=None,
        help="scorecam top_n for --methods all (0: every channel; default per model, see SETTINGS)",
    )
    parser.add_argument(
        "--only",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=None,
        help="with --methods all: time only these methods (comma-separated), e.g. to keep a "
        "run on a big model short",
    )
    parser.add_argument(
        "--no-peers",
        dest="peers",
        action="store_false",
        help="skip tf-keras-vis (compared on the TensorFlow backend when it is installed)",
    )
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    args.jit_compile = {"default": None, "on": True, "off": False}[args.jit_compile]
    args.peers = args.peers and BACKEND == "tensorflow"
    if args.methods in ("text", "vit"):
        args.model = args.methods  # text_cases / vit_cases.build_model, not a --model choice
    if args.model is None:
        args.model = "small" if args.methods == "all" else "resnet50v2"
    if args.batch is None:
        args.batch = 8 if args.methods == "all" else 16
    if args.batch < 1 or args.repeats < 1 or args.warmup < 1 or args.units < 1:
        parser.error("--batch, --units, --repeats and --warmup must be >= 1")

    print(
        f"backend={BACKEND} model={args.model} methods={args.methods} batch={args.batch} "
        f"units={args.units} repeats={args.repeats}",
        flush=True,
    )
    report = run(args)
    text = markdown(report)
    print()
    print(text)

    os.makedirs(args.results_dir, exist_ok=True)
    stem = BACKEND if args.model == "resnet50v2" else f"{BACKEND}-{args.model}"
    if args.batch != 16 or args.units != 1:
        stem += f"-b{args.batch}-u{args.units}"
    if args.threads:
        stem += f"-t{args.threads}"
    if args.jit_compile is not None:
        stem += "-xla" if args.jit_compile else "-noxla"
    if args.methods == "all":
        stem += "-all" if not args.only else "-some"
    if args.methods in ("targets", "text"):
        stem += f"-{args.methods}"
    with open(os.path.join(args.results_dir, f"{stem}.json"), "w") as file:
        json.dump(report, file, indent=2)
    md_path = os.path.join(args.results_dir, f"{stem}.md")
    with open(md_path, "w") as file:
        file.write(text)
    print(f"markdown written to {md_path}")
    return report


if __name__ == "__main__":
    main()
