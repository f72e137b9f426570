"""Faithfulness of the token methods on a text classifier whose answer we know.

The model (``benchmarks/synthetic_sentences.py``: Embedding -> Conv1D -> global
max pooling -> Dense, trained offline on sentences whose label is decided by
1-3 planted sentiment words among 8-16 neutral fillers, cached) is explained at
its embedding for the class it predicts, on ``--sentences`` test sentences it
never saw, by every token method. Two measures per method:

- **token deletion AUC** (lower is better): the sentence's real tokens are
  replaced by ``[PAD]`` (id 0) one at a time, highest-attributed first; after
  each removal the softmax probability of the explained class is read; the AUC
  is the trapezoid area under that curve over the fraction removed (0 to 1),
  averaged over sentences. The same curve with the tokens removed in random
  order (``--random-orders`` orders per sentence, seed 0) is the baseline every
  method must beat;
- **planted first**: the share of sentences whose highest-attributed token is a
  planted word, and **planted precision**: the share of a sentence's ``k``
  planted words found among its ``k`` highest-attributed tokens (averaged).

Attributions are ranked as signed values (what raises the class's logit first)
for Gradient x Input, Integrated Gradients and occlusion; Gradients and
SmoothGrad are unsigned (the norm over the embedding dimension). Padded
positions are never ranked.

Run it once per backend::

    KERAS_BACKEND=jax python benchmarks/text_faithfulness.py

Results: ``benchmarks/results/text-faithfulness-<backend>.json`` and ``.md``.
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
import synthetic_sentences as data  # noqa: E402

import keras_explainable as ke  # noqa: E402

BACKEND = keras.backend.backend()
IG_STEPS = 32
SMOOTH_COPIES = 16


def methods():
    """``{label: (method, params, signed)}``: every token method, with its settings."""
    gradient = ke.methods.gradient
    smooth = ke.methods.meta.smooth(gradient.gradients, repetitions=SMOOTH_COPIES, noise=0.1)
    return {
        "Gradients": (gradient.gradients, {}, False),
        "Gradient × Input": (gradient.gradients_x_inputs, {}, True),
        f"Integrated Gradients ({IG_STEPS} steps, [PAD] baseline)": (
            gradient.integrated_gradients,
            {"n_steps": IG_STEPS, "baseline": "pad"},
            True,
        ),
        f"SmoothGrad ({SMOOTH_COPIES} copies)": (smooth, {}, False),
        "Occlusion (1 token, [PAD])": (
            ke.methods.perturbation.occlusion,
            {"window": 1, "stride": 1, "baseline": data.PAD},
            True,
        ),
    }


def orders_by(attributions, ids):
    """Per sentence, its real tokens' positions, highest attribution first."""
    orders = []
    for weights, row in zip(attributions, ids):
        real = np.flatnonzero(row != data.PAD)
        orders.append(real[np.argsort(-weights[real], kind="stable")])
    return orders


def deletion_curves(model, ids, labels, orders):
    """``(sentences,)`` deletion AUCs: tokens set to [PAD] in ``orders``' order."""
    variants, owners = [], []
    for i, order in enumerate(orders):
        sequence = ids[i].copy()
        variants.append(sequence.copy())
        for position in order:
            sequence[position] = data.PAD
            variants.append(sequence.copy())
        owners.append(len(order) + 1)
    logits = model.predict(np.stack(variants), batch_size=1024, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    aucs, start = [], 0
    for i, count in enumerate(owners):
        curve = probabilities[start : start + count, labels[i]]
        start += count
        aucs.append(np.trapezoid(curve, dx=1.0 / (count - 1)))
    return np.asarray(aucs)


def planted_scores(orders, planted):
    first = np.mean([planted[i, order[0]] for i, order in enumerate(orders)])
    precision = np.mean(
        [planted[i, order[: planted[i].sum()]].mean() for i, order in enumerate(orders)]
    )
    return float(first), float(precision)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--random-orders", type=int, default=5)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    model, note = data.load_or_train(verbose=False, retrain=args.retrain)
    print(note)
    ids, labels, planted = data.make_dataset(args.sentences, data.TEST_SEED)
    predicted = np.argmax(model.predict(ids, verbose=0), axis=-1)
    accuracy = float(np.mean(predicted == labels))
    print(f"test accuracy {accuracy:.3f} on {args.sentences} sentences")

    rows = []
    rng = np.random.default_rng(0)
    random_aucs = np.mean(
        [
            deletion_curves(
                model, ids, predicted, [rng.permutation(np.flatnonzero(r != data.PAD)) for r in ids]
            )
            for _ in range(args.random_orders)
        ],
        axis=0,
    )
    random_orders = [rng.permutation(np.flatnonzero(r != data.PAD)) for r in ids]
    first, precision = planted_scores(random_orders, planted)
    rows.append(("*random order*", float(random_aucs.mean()), None, first, precision, None))
    oracle = orders_by(planted.astype(float), ids)  # the planted words first, then the rest
    aucs = deletion_curves(model, ids, predicted, oracle)
    rows.append(("*planted words first*", float(aucs.mean()), float(np.mean(aucs < random_aucs)),
                 1.0, 1.0, None))  # fmt: skip
    for label, (method, params, signed) in methods().items():
        start = time.perf_counter()
        _, maps = ke.explain(
            method, model, ids, predicted, batch_size=64, verbose=0, postprocessing=None,
            pad_id=data.PAD, **params,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        weights = maps[..., 0] if signed else np.abs(maps[..., 0])
        orders = orders_by(weights, ids)
        aucs = deletion_curves(model, ids, predicted, orders)
        wins = float(np.mean(aucs < random_aucs))
        first, precision = planted_scores(orders, planted)
        rows.append((label, float(aucs.mean()), wins, first, precision, seconds))
        print(
            f"{label:34s} deletion {aucs.mean():.3f} (random {random_aucs.mean():.3f}) "
            f"planted first {first:.3f} precision {precision:.3f} {seconds:.1f} s"
        )

    header = (
        f"Text faithfulness, {BACKEND} backend, {args.sentences} test sentences, model "
        f"accuracy {accuracy:.3f} (sentence_cnn, benchmarks/synthetic_sentences.py); "
        "deletion: [PAD] replaces tokens, "
        f"softmax probability of the predicted class; random: mean of {args.random_orders} "
        f"orders per sentence; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other jobs."
    )
    table = [
        header,
        "",
        "| method | deletion AUC ↓ | beats random (share of sentences) | planted first ↑ "
        "| planted precision ↑ | time (s) |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for label, auc, wins, first, precision, seconds in rows:
        table.append(
            f"| {label} | {auc:.3f} | {'' if wins is None else f'{wins:.2f}'} | {first:.3f} "
            f"| {precision:.3f} | {'' if seconds is None else f'{seconds:.1f}'} |"
        )
    text = "\n".join(table) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"text-faithfulness-{BACKEND}.md").write_text(text)
    (out / f"text-faithfulness-{BACKEND}.json").write_text(
        json.dumps(
            {
                "backend": BACKEND,
                "sentences": args.sentences,
                "accuracy": accuracy,
                "model": note,
                "rows": [
                    dict(
                        zip(
                            (
                                "method",
                                "deletion_auc",
                                "beats_random",
                                "planted_first",
                                "planted_precision",
                                "seconds",
                            ),
                            row,
                        )
                    )
                    for row in rows
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
