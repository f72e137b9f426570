"""Cold wall times of ``keras-explainable`` commands, each in a fresh process.

Every command runs ``--rounds`` times (median and min–max reported) as ``python -m
keras_explainable ...`` under the Python running this script, with the environment
it is given (``KERAS_BACKEND``, ``PYTHONPATH`` to time another checkout). It also
counts the lines a command prints on stderr (framework log noise):

    KERAS_BACKEND=jax python scripts/time_cli.py --rounds 3
    PYTHONPATH=/tmp/before/src python scripts/time_cli.py --label before

Prints one Markdown table row per command. Cold means a new interpreter, not a cold
disk cache: the first round warms the page cache, so later ones are faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "keras_explainable" / "data"


def commands(folder: Path) -> dict[str, list[str]]:
    model = SAMPLES / "demo_model.keras"
    image = sorted((SAMPLES / "samples").glob("*.png"))[0]
    return {
        "--help": ["--help"],
        "--version": ["--version"],
        "methods": ["methods"],
        "explain: missing model file": ["explain", str(folder / "missing.keras"), str(image)],
        "explain: unknown method": ["explain", str(model), str(image), "--method", "gradkam"],
        "explain demo_model.keras, 1 image, Grad-CAM": [
            "explain",
            str(model),
            str(image),
            "--out",
            str(folder / "report-{round}"),
            "--quiet",
        ],  # fmt: skip
        "demo (5 images, 6 methods)": [
            "demo",
            "--out",
            str(folder / "demo-{round}"),
            "--quiet",
        ],  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="", help="a label for the table's rows")
    parser.add_argument(
        "--only", default=None, help="run only commands containing one of these (comma-separated)"
    )
    args = parser.parse_args()
    backend = os.environ.get("KERAS_BACKEND", "(unset)")
    if os.path.exists("/proc/loadavg"):  # how busy the machine was
        with open("/proc/loadavg") as file:
            print(f"load average at start: {' '.join(file.read().split()[:3])}")
    print(f"| {args.label} command | backend | median s | min–max s | stderr lines | exit |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name, argv in commands(Path(folder)).items():
            if args.only and not any(part in name for part in args.only.split(",")):
                continue
            times, noise, code = [], 0, None
            for round_ in range(args.rounds):
                full = [sys.executable, "-m", "keras_explainable"]
                full += [part.replace("{round}", str(round_)) for part in argv]
                start = time.perf_counter()
                result = subprocess.run(full, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                noise = max(noise, len(result.stderr.splitlines()))
                code = result.returncode
            print(
                f"| {name} | {backend} | {statistics.median(times):.2f} | "
                f"{min(times):.2f}–{max(times):.2f} | {noise} | {code} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
