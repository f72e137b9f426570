"""Peak memory of ``ke.explain`` with ``maps_file``: flat in the number of images.

Each case runs in a fresh Python process, which builds a small CNN (64 x 64 x 3
inputs, two convolutions, global pooling, 10 classes), explains one batch to
compile the step, records its peak resident memory (``ru_maxrss``), then
explains ``N`` images with Grad-CAM (one unit per image, batches of 64, so the
last batch is ragged) and records the peak again. Cases:

- ``generator -> file``: images made batch by batch by a generator of unknown
  length, maps streamed to a ``.npy`` with ``maps_file``;
- ``memmap -> file``: images read from a ``.npy`` on disk opened with
  ``np.load(mmap_mode="r")``, maps streamed to a ``.npy``;
- ``generator -> memory``: the default, every map returned in one array (for
  contrast: it grows with ``N``).

Usage::

    KERAS_BACKEND=jax python benchmarks/streaming_memory.py            # 500 and 5,000 images
    python benchmarks/streaming_memory.py --backends tensorflow jax torch --out table.md

``ru_maxrss`` counts pages of memory-mapped files that were read as resident
too; the kernel can drop them at any time (they are clean copies of the file),
but they show up in the peak of the ``memmap`` case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

SIDE = 64
CHANNELS = 3
CLASSES = 10
BATCH = 64


def _images(start: int, stop: int):
    """Images ``start..stop`` of the synthetic set, the same in every process."""
    import numpy as np

    rows = [
        np.random.default_rng(index).uniform(0, 1, (SIDE, SIDE, CHANNELS)).astype("float32")
        for index in range(start, stop)
    ]
    return np.stack(rows)


def _write_inputs(path: str, count: int) -> None:
    """A ``(count, 64, 64, 3)`` float32 ``.npy`` on disk, written a chunk at a time."""
    import numpy as np

    array = np.lib.format.open_memmap(
        path, mode="w+", dtype="float32", shape=(count, SIDE, SIDE, 3)
    )
    for start in range(0, count, 500):
        array[start : start + 500] = _images(start, min(start + 500, count))
    array.flush()
    del array


def _peak_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20  # KiB on Linux


def child(count: int, source: str, output: str, inputs: str | None, workdir: str) -> dict:
    """One case, in this (fresh) process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    import numpy as np

    import keras_explainable as ke

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((SIDE, SIDE, CHANNELS)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES),
        ]
    )
    warm = _images(0, BATCH)
    ke.gradcam(model, warm, np.arange(BATCH) % CLASSES, batch_size=BATCH, verbose=0)
    before = _peak_mib()

    if source == "memmap":
        x = np.load(inputs, mmap_mode="r")[:count]
        y = np.arange(count) % CLASSES
    else:

        def batches():
            for start in range(0, count, BATCH):
                stop = min(start + BATCH, count)
                yield _images(start, stop), np.arange(start, stop) % CLASSES

        x, y = batches(), None
    maps_file = os.path.join(workdir, f"maps_{source}_{count}.npy") if output == "file" else None
    start = time.perf_counter()
    scores, maps = ke.gradcam(model, x, y, batch_size=BATCH, verbose=0, maps_file=maps_file)
    seconds = time.perf_counter() - start
    after = _peak_mib()
    checksum = float(np.asarray(maps[-1]).sum())  # touch the last map: it was written
    if maps_file is not None:
        del maps
        assert np.load(maps_file, mmap_mode="r").shape == (count, SIDE, SIDE, 1)
        os.remove(maps_file)
    return {
        "backend": keras.backend.backend(),
        "images": count,
        "source": source,
        "output": output,
        "peak_before_mib": round(before, 1),
        "peak_mib": round(after, 1),
        "seconds": round(seconds, 2),
        "scores": list(scores.shape),
        "checksum": checksum,
    }


def run_case(backend: str, count: int, source: str, output: str, inputs: str, workdir: str):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        str(count),
        source,
        output,
        inputs,
        workdir,
    ]
    env = dict(os.environ, KERAS_BACKEND=backend)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} {count} {source} {output} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = [
        "| backend | images | inputs | maps | peak RSS after warm-up (MiB) | peak RSS (MiB) "
        "| growth (MiB) | time (s) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        growth = r["peak_mib"] - r["peak_before_mib"]
        maps = "`maps_file` (.npy)" if r["output"] == "file" else "in memory"
        lines.append(
            f"| {r['backend']} | {r['images']:,} | {r['source']} | {maps} | "
            f"{r['peak_before_mib']:.0f} | {r['peak_mib']:.0f} | {growth:.0f} | "
            f"{r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=[os.environ.get("KERAS_BACKEND", "jax")])
    parser.add_argument("--counts", nargs="+", type=int, default=[500, 5000])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["generator:file", "memmap:file", "generator:memory"],
        help="source:output pairs (source: generator|memmap, output: file|memory)",
    )
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        inputs = os.path.join(workdir, "inputs.npy")
        if any(case.startswith("memmap") for case in args.cases):
            _write_inputs(inputs, max(args.counts))
        for backend in args.backends:
            for case in args.cases:
                source, output = case.split(":")
                for count in args.counts:
                    result = run_case(backend, count, source, output, inputs, workdir)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    maps_mib = {n: n * SIDE * SIDE * 4 / 2**20 for n in args.counts}
    inputs_mib = {n: n * SIDE * SIDE * CHANNELS * 4 / 2**20 for n in args.counts}
    text = "\n".join(
        [
            "# Streaming: peak memory of `ke.explain` with `maps_file`",
            "",
            "Grad-CAM of a small CNN on 64 x 64 x 3 images, one unit per image, batches of "
            f"{BATCH} (the last one ragged), each case in a fresh process "
            '(`benchmarks/streaming_memory.py`). Peak RSS is `ru_maxrss`; "after warm-up" is '
            "measured once the model is built and the step compiled, and growth is the "
            "difference. For scale: "
            + "; ".join(
                f"{n:,} images = {inputs_mib[n]:.0f} MiB of inputs, {maps_mib[n]:.0f} MiB of maps"
                for n in args.counts
            )
            + ".",
            "",
            table(results),
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, {platform.system()}.",
            "",
        ]
    )
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        count, source, output, inputs, workdir = sys.argv[2:7]
        print(json.dumps(child(int(count), source, output, inputs, workdir)))
    else:
        main()
