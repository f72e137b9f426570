"""How the cost of Grad-CAM, Gradients and Score-CAM grows, on one backend.

Run it once per backend, each in its own process::

    KERAS_BACKEND=jax python benchmarks/scaling.py --threads 2
    KERAS_BACKEND=torch python benchmarks/scaling.py --resnet     # + a few ResNet50V2 points

On the small CNN of ``benchmark.py`` (random weights), one axis at a time moves away from
the base point (batch N = 8, U = 1 unit per sample, 64 x 64 inputs, Score-CAM over its
K = 16 channels of highest variance, ``top_n``, 8 masked inputs per pass):

- ``N``: samples in the batch (1, 4, 16, 64);
- ``U``: units explained per sample (1, 2, 4, 8);
- ``K``: Score-CAM's masked passes per sample (8, 16, 32, 64) and RISE's masks
  (64, 128, 256; a cost per mask like Score-CAM's, for comparison);
- ``size``: the input's side (32, 64, 128).

At each point ``model.predict``, the compiled forward step and the methods are called once
(compiling), then ``--repeats`` interleaved rounds are timed; the tables give medians (with
the min-max spread) and ratios to ``predict`` and to the compiled forward pass (TensorFlow's
``predict`` has a fixed cost per call that dominates at small sizes). ``--resnet`` adds
ResNet50V2 at N = 4 and 16 (224 px, Score-CAM K = 16) for predict, Grad-CAM and Gradients.
Results: ``benchmarks/results/scaling-<backend>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark as bench  # noqa: E402  (sets the thread limits before the frameworks start)

import keras_explainable as ke  # noqa: E402

BASE = {"batch": 8, "units": 1, "size": 64, "k": 16}
AXES = {
    "N": ("batch", (1, 4, 16, 64)),
    "U": ("units", (1, 2, 4, 8)),
    "K": ("k", (8, 16, 32, 64)),
    "size": ("size", (32, 64, 128)),
}
RISE_MASKS = (64, 128, 256)
CHUNK = 8


def point_cases(model, point, rise_masks=None):
    """The timed calls at one point: predict, forward, the methods (or RISE alone)."""
    rng = bench.np.random.default_rng(0)
    size, batch, units = point["size"], point["batch"], point["units"]
    x = rng.uniform(-1.0, 1.0, (batch, size, size, 3)).astype("float32")
    classes = int(model.outputs[0].shape[-1])
    y = rng.integers(0, classes, (batch, units) if units > 1 else (batch,))
    options = {"batch_size": batch, "verbose": 0}
    forward = bench.forward_step(model)
    xt = bench.ops.convert_to_tensor(x)
    cases = {
        "predict": lambda: model.predict(x, batch_size=batch, verbose=0),
        "forward": lambda: bench.to_numpy(forward(xt)),
    }
    count = rise_masks or point["k"]
    if count:  # the masked forward passes it cannot avoid (see benchmark.limit_cases)
        masked = bench.ops.convert_to_tensor(bench.np.repeat(x, CHUNK, axis=0))
        passes = -(-count // CHUNK)

        def limit():
            for _ in range(passes):
                out = forward(masked)
            return bench.to_numpy(out)

        cases["limit"] = limit
    if rise_masks:
        cases["rise"] = lambda: ke.rise(
            model, x, y, masks=rise_masks, seed=0, chunk_size=CHUNK, **options
        )
        return cases
    cases["gradcam"] = lambda: ke.gradcam(model, x, y, **options)
    cases["gradients"] = lambda: ke.gradients(model, x, y, **options)
    if point["k"]:
        cases["scorecam"] = lambda: ke.scorecam(
            model, x, y, top_n=point["k"], chunk_size=CHUNK, **options
        )
    return cases


def measure(cases, repeats):
    first = {name: bench.timed(fn) for name, fn in cases.items()}
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(bench.timed(fn))
    out = {}
    for name, values in times.items():
        out[name] = {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "first_call_s": first[name],
            "x_predict": statistics.median([v / p for v, p in zip(values, times["predict"])]),
            "x_forward": statistics.median([v / f for v, f in zip(values, times["forward"])]),
            "times_s": values,
        }
    return out


def run(args):
    rows = []
    models = {}

    def small(size):
        if size not in models:
            models[size] = bench.build_model("small", args.seed, size)[0]
        return models[size]

    for axis, (key, values) in AXES.items():
        for value in values:
            point = dict(BASE, **{key: value})
            label = f"{axis}={value}"
            print(f"  {label}: {point}", flush=True)
            results = measure(point_cases(small(point["size"]), point), args.repeats)
            rows.append({"model": "small", "axis": axis, "value": value, "point": point,
                         "results": results})  # fmt: skip
            if axis == "K" and value == values[-1]:
                for masks in RISE_MASKS:
                    print(f"  RISE masks={masks}", flush=True)
                    results = measure(
                        point_cases(small(BASE["size"]), BASE, rise_masks=masks), args.repeats
                    )
                    rows.append({"model": "small", "axis": "K (RISE masks)", "value": masks,
                                 "point": dict(BASE, k=None), "results": results})  # fmt: skip
    if args.resnet:
        model = bench.build_model("resnet50v2", args.seed)[0]
        for batch in (4, 16):
            point = {"batch": batch, "units": 1, "size": 224, "k": None}
            print(f"  ResNet50V2 N={batch}", flush=True)
            results = measure(point_cases(model, point), max(1, args.repeats - 1))
            rows.append({"model": "resnet50v2", "axis": "N", "value": batch, "point": point,
                         "results": results})  # fmt: skip
    return rows


def markdown(report) -> str:
    env = report["environment"]
    lines = [
        f"### Cost growth, {report['backend']} ({env['backend_version']})",
        "",
        f"Small CNN; base point N={BASE['batch']}, U={BASE['units']}, {BASE['size']} px, "
        f"Score-CAM K={BASE['k']} (chunk {CHUNK}); one axis moves at a time. Median of "
        f"{report['repeats']} interleaved rounds, seconds (x predict / x compiled forward "
        f"pass of the same batch); x its limit: Score-CAM or RISE over ceil(K / {CHUNK}) "
        f"compiled forward passes of N x {CHUNK} inputs (median per-round ratio); compute "
        f"threads: {env['threads'] or 'default'}; load "
        f"average {env['loadavg_before'][0]:.1f} -> {env['loadavg_after'][0]:.1f}.",
        "",
        "| model | axis | value | predict (s) | forward (s) | Grad-CAM | Gradients "
        "| Score-CAM / RISE | x its limit |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]

    def cell(results, name):
        if name not in results:
            return "-"
        r = results[name]
        return f"{r['median_s']:.3f} ({r['x_predict']:.2f} / {r['x_forward']:.1f})"

    for row in report["rows"]:
        r = row["results"]
        name = "rise" if "rise" in r else "scorecam"
        last = cell(r, name)
        over = "-"
        if name in r and "limit" in r:
            ratios = [t / b for t, b in zip(r[name]["times_s"], r["limit"]["times_s"])]
            over = f"{statistics.median(ratios):.2f}"
        lines.append(
            f"| {row['model']} | {row['axis']} | {row['value']} | {r['predict']['median_s']:.3f} "
            f"| {r['forward']['median_s']:.3f} | {cell(r, 'gradcam')} | {cell(r, 'gradients')} "
            f"| {last} | {over} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="see benchmark.py")
    parser.add_argument("--resnet", action="store_true", help="add ResNet50V2 points")
    parser.add_argument("--results-dir", default=os.path.join(bench.HERE, "results"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    bench._fit_step_cache(64)  # every point compiles its own steps: keep them all
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(f"backend={bench.BACKEND} repeats={args.repeats}", flush=True)
    rows = run(args)
    report = {
        "backend": bench.BACKEND,
        "base": BASE,
        "chunk_size": CHUNK,
        "repeats": args.repeats,
        "rows": rows,
        "environment": {
            "backend_version": bench._backend_version(),
            "source": bench.source_revision(),
            "threads": bench.THREADS,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "wall_s": time.perf_counter() - started,
        },
    }
    text = markdown(report)
    print()
    print(text)
    os.makedirs(args.results_dir, exist_ok=True)
    stem = os.path.join(args.results_dir, f"scaling-{bench.BACKEND}")
    with open(stem + ".json", "w") as file:
        json.dump(report, file, indent=2)
    with open(stem + ".md", "w") as file:
        file.write(text)
    print(f"markdown written to {stem}.md")
    return report


if __name__ == "__main__":
    main()
