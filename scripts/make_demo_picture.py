"""Regenerate the README's picture of the demo report (``docs/_static/demo.png``).

Runs ``keras-explainable demo`` into a temporary folder (or ``--report DIR``),
then draws what its ``index.html`` shows as one picture: a row per sample
picture, with the input, the two top classes' Grad-CAM overlays and the top
class under the other demo methods, each titled with the class and its
probability. Offline, a few seconds on any backend:

    KERAS_BACKEND=jax python scripts/make_demo_picture.py [--out docs/_static/demo.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from keras_explainable.cli.environment import use_installed_backend

use_installed_backend()  # before Keras is imported: an installed backend if Keras' is missing

from PIL import Image  # noqa: E402

from keras_explainable import cli  # noqa: E402
from keras_explainable.cli._common import registry  # noqa: E402
from keras_explainable.data import DEMO_CLASS_NAMES, demo_images, load_demo_model  # noqa: E402
from keras_explainable.explanation import explain_prediction  # noqa: E402
from keras_explainable.utils import visualize  # noqa: E402

METHODS, _ = registry()

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (("gradcam", 0), ("gradcam", 1), ("gradcampp", 0), ("scorecam", 0),
           ("layercam", 0), ("gradients", 0), ("occlusion", 0))  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static" / "demo.png")
    parser.add_argument("--report", type=Path, default=None, help="also keep the HTML report here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:  # the command itself must work, too
        report = args.report or Path(folder) / "report"
        code = cli.main(["demo", "--out", str(report), "--quiet"])
        if code != 0:
            raise SystemExit(f"keras-explainable demo failed with exit code {code}")

    model = load_demo_model()
    pictures, titles, overlays = [], [], []
    for image in demo_images():
        found = {
            name: explain_prediction(model, image, method=name, top_k=2,
                                     class_names=DEMO_CLASS_NAMES)
            for name in {name for name, _ in COLUMNS}
        }  # fmt: skip
        pictures.append(image)
        titles.append("input")
        overlays.append(None)
        for name, rank in COLUMNS:
            target = found[name].targets[rank]
            pictures.append(image)
            titles.append(
                f"{METHODS[name].title} #{rank + 1}\n{target.label} {target.probability:.0%}"
            )
            overlays.append(target.heatmap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture = visualize(
        pictures, titles=titles, overlays=overlays, overlay_alpha=0.5, cols=len(COLUMNS) + 1,
        figsize=(1.45 * (len(COLUMNS) + 1), 1.9 * len(demo_images())), dpi=80,
        subplots_hs=0.42, to_buffer=True,
    )  # fmt: skip
    # a 256-colour palette keeps the committed PNG small (~4x) at no visible cost
    picture.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
