"""Sanity check (Adebayo et al., 2018) of Gradients and Grad-CAM on the synthetic shapes model.

The model-parameter randomization test of ``ke.metrics.model_randomization``, run
on the trained model of ``benchmarks/synthetic_shapes.py`` (cached; trained
first when missing): the layers with weights are re-initialized one by one from
the logits down (cascading), and after each stage the maps of the randomized
model are compared with the trained model's maps (Spearman rank correlation of
the maps and of their absolute values, SSIM of the min-max normalised maps,
means over the images). A faithful method's maps decorrelate as the weights
they depend on are destroyed.

    KERAS_BACKEND=jax python benchmarks/sanity.py [--images 32]

Results: ``benchmarks/results/sanity-<backend>.json`` and ``.md``; the script
exits with 1 when a method's maps stay correlated (last stage's mean Spearman
correlation above ``--threshold``, default 0.3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see README, Troubleshooting
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
import synthetic_shapes  # noqa: E402

import keras_explainable as ke  # noqa: E402

BACKEND = keras.backend.backend()
METHODS = {
    "gradients": (ke.methods.gradient.gradients, ke.filters.normalize),
    "gradcam": (ke.methods.cams.gradcam, ke.filters.positive_normalize),
}


def run(images: int, seed: int) -> dict:
    model, note = synthetic_shapes.load_or_train(verbose=True)
    x, y, _, _ = synthetic_shapes.make_dataset(images, synthetic_shapes.TEST_SEED)
    results = {}
    for name, (method, postprocessing) in METHODS.items():
        result = ke.metrics.model_randomization(
            method, model, x, y, mode="cascading", seed=seed, postprocessing=postprocessing
        )
        print(f"\n{name}\n{result}", flush=True)
        results[name] = result.table()
    return {"backend": BACKEND, "model": note, "images": images, "seed": seed, "stages": results}


def markdown(report: dict, threshold: float) -> str:
    names = list(report["stages"])
    head = ["stage", "randomized (cascading, from the logits down)"]
    for name in names:
        head += [f"{name} spearman", f"{name} spearman(abs)", f"{name} SSIM"]
    lines = [
        f"### Sanity check — {report['backend']}",
        "",
        f"Cascading model-parameter randomization of the synthetic shapes model, "
        f"{report['images']} test images, the ground-truth class; means over images "
        "(stage 0: the intact clone).",
        "",
        "| " + " | ".join(head) + " |",
        "|--:|:--|" + "--:|" * (len(head) - 2),
    ]
    first = report["stages"][names[0]]
    for k, row in enumerate(first):
        cells = [str(row["stage"]), f"`{row['layer']}`"]
        for name in names:
            stage = report["stages"][name][k]
            cells += [f"{stage[key]:.3f}" for key in ("spearman", "spearman_abs", "ssim")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name in names:
        last = report["stages"][name][-1]["spearman"]
        verdict = "decorrelates" if last <= threshold else "**stays correlated**"
        lines.append(f"- `{name}`: {verdict} (Spearman {last:.3f} with every layer randomized).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="synthetic test images")
    parser.add_argument("--seed", type=int, default=0, help="re-initialization seed")
    parser.add_argument("--threshold", type=float, default=0.3, help="pass: last Spearman <= it")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    report = run(args.images, args.seed)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"sanity-{BACKEND}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report, args.threshold)
    stem.with_suffix(".md").write_text(table)
    print()
    print(table)
    print(f"written: {stem}.json, {stem}.md")
    last = [stages[-1]["spearman"] for stages in report["stages"].values()]
    return 0 if all(value <= args.threshold for value in last) else 1


if __name__ == "__main__":
    sys.exit(main())
