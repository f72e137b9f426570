"""tf-keras-vis 0.8.7 on the same model and inputs as keras-explainable (TensorFlow only).

``benchmark.py`` imports this module on the TensorFlow backend and interleaves the cases
it builds with its own, so that every round times ours and theirs under the same load:

- ``Gradcam``, ``GradcamPlusPlus``, ``Scorecam`` and ``Saliency``, each built once with the
  ``ReplaceToLinear`` model modifier (as tf-keras-vis documents; the model is cloned then)
  and called with a ``CategoricalScore`` of the same units, on the same numpy batch;
- their CAMs read the same activation as ours (the input of the global pooling layer), by
  naming its layer (``penultimate_layer``, ``seek_penultimate_conv_layer=False``);
- ``Scorecam`` with ``max_N`` (their Faster Score-CAM) keeps the ``max_N`` channels of
  highest spatial deviation of each sample, then masks every sample with the union of
  those channels. :func:`matching_scorecam` picks ``max_N`` and tells how many channels
  that union holds: ``K``, which ``benchmark.py`` passes to our ``scorecam`` as ``top_n``
  so that both run ``K`` masked forward passes per sample. Their masked inputs go through
  ``model.predict`` with ``batch_size = batch * chunk_size`` (the rows of one of our passes).

tf-keras-vis is a benchmark-only dependency (``pip install tf-keras-vis==0.8.7``); without
it the comparison is skipped with a message saying so. Version 0.8.7 runs on Keras 3 /
TensorFlow 2.21 as is (it uses ``tf.keras``, which is Keras 3 there).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

# Ours -> the tf-keras-vis class it is compared with.
PAIRS = {
    "gradcam": "Gradcam",
    "gradcampp": "GradcamPlusPlus",
    "scorecam": "Scorecam",
    "gradients": "Saliency",
}
VERSION = "0.8.7"
# Target: ours at least this many times faster than tf-keras-vis' Grad-CAM.
GRADCAM_SPEEDUP_TARGET = 3.5


def available() -> tuple[str | None, str]:
    """``(version, message)``: the installed tf-keras-vis version (None if missing)."""
    try:
        import tf_keras_vis
    except ImportError as error:
        return None, (
            f"tf-keras-vis is not installed ({error}); the comparison with it is skipped. "
            f"Install it with: pip install tf-keras-vis=={VERSION}"
        )
    version = getattr(tf_keras_vis, "__version__", "unknown")
    note = "" if version == VERSION else f" (the benchmark was written for {VERSION})"
    return version, f"tf-keras-vis {version}{note}"


def peer_name(method: str) -> str:
    return f"tf-keras-vis {PAIRS[method]}"


def union_of_top_channels(activations: np.ndarray, max_n: int) -> int:
    """How many channels tf-keras-vis' ``Scorecam(max_N=max_n)`` masks the batch with.

    It ranks the channels of each sample by their standard deviation over space, keeps
    each sample's ``max_n`` first and masks every sample with the union of them.
    """
    spatial = tuple(range(1, activations.ndim - 1))
    deviation = activations.std(axis=spatial)  # (batch, channels)
    top = np.argsort(-deviation, axis=-1, kind="stable")[:, :max_n]
    return int(np.unique(top).size)


def matching_scorecam(activations: np.ndarray, target: int | None) -> tuple[int | None, int]:
    """``(max_N, K)``: the largest ``max_N`` whose union holds at most ``target`` channels.

    ``target=None`` means every channel (``max_N=None``: Score-CAM without the top-variance
    selection), ``K`` is then the number of channels. The union of ``max_N=1`` is the
    floor: if it already exceeds ``target``, ``max_N=1`` and its union are returned.
    """
    channels = int(activations.shape[-1])
    if target is None or target >= channels:
        return None, channels
    best = (1, union_of_top_channels(activations, 1))
    for max_n in range(2, target + 1):
        count = union_of_top_channels(activations, max_n)
        if count > target:
            break
        best = (max_n, count)
    return best


def peer_cases(model, x, y, layer: str, scorecam_max_n, scorecam_batch: int) -> dict:
    """The timed tf-keras-vis calls, keyed by :func:`peer_name` of our method.

    Args:
        model: the Keras model ours explains (with linear outputs already; the modifier
            is applied anyway, as tf-keras-vis recommends).
        x: the numpy batch; y: one class per sample.
        layer: the name of the layer whose output our CAMs explain.
        scorecam_max_n: ``max_N`` for ``Scorecam`` (None: every channel).
        scorecam_batch: ``batch_size`` of ``Scorecam``'s ``model.predict`` of masked inputs.
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    score = CategoricalScore([int(v) for v in np.asarray(y).reshape(len(x))])
    cam_options = {"penultimate_layer": layer, "seek_penultimate_conv_layer": False}

    def build(cls):
        return cls(model, model_modifier=ReplaceToLinear(), clone=True)

    gradcam, gradcampp, scorecam, saliency = (
        build(c) for c in (Gradcam, GradcamPlusPlus, Scorecam, Saliency)
    )

    def quiet(fn):
        # Scorecam's model.predict draws a progress bar (it has no verbose option).
        def call():
            with contextlib.redirect_stdout(io.StringIO()):
                return fn()

        return call

    return {
        peer_name("gradcam"): lambda: gradcam(score, x, **cam_options),
        peer_name("gradcampp"): lambda: gradcampp(score, x, **cam_options),
        peer_name("scorecam"): quiet(
            lambda: scorecam(
                score, x, max_N=scorecam_max_n, batch_size=scorecam_batch, **cam_options
            )
        ),
        peer_name("gradients"): lambda: saliency(score, x),
    }


def speedups(times: dict, predict: list) -> dict:
    """Per pair: ours vs theirs, from the interleaved rounds' times.

    ``speedup_median`` is the median of the per-round ratios theirs / ours (both timed in
    the same round), ``speedup_best`` the ratio of the fastest times.
    """
    out = {}
    for ours, cls in PAIRS.items():
        theirs = peer_name(ours)
        if ours not in times or theirs not in times:
            continue
        ratios = [t / o for t, o in zip(times[theirs], times[ours])]
        out[ours] = {
            "peer": cls,
            "speedup_median": float(np.median(ratios)),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
            "speedup_best": min(times[theirs]) / min(times[ours]),
            "peer_x_predict": float(np.median([t / p for t, p in zip(times[theirs], predict)])),
            "ours_x_predict": float(np.median([o / p for o, p in zip(times[ours], predict)])),
            "ratios": ratios,
        }
    return out


def markdown(pairs: dict, version: str, scorecam: dict) -> list[str]:
    """The speed-up table, as Markdown lines."""
    lines = [
        "",
        f"Against tf-keras-vis {version} (same model, inputs and units; interleaved rounds). "
        f"Score-CAM: K = {scorecam['k']} masked passes per sample on both sides "
        f"(their max_N = {scorecam['max_n']}, our top_n = {scorecam['top_n']}).",
        "",
        "| ours | tf-keras-vis | ours x predict | theirs x predict | speed-up (min-max) "
        "| speed-up (best) | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for ours, p in pairs.items():
        target = GRADCAM_SPEEDUP_TARGET if ours == "gradcam" else 1.0
        ok = p["speedup_median"] >= target if ours == "gradcam" else p["speedup_median"] > target
        verdict = (
            (">= " if ours == "gradcam" else "> ") + f"{target} " + ("ok" if ok else "**missed**")
        )
        lines.append(
            f"| {ours} | {p['peer']} | {p['ours_x_predict']:.2f} | {p['peer_x_predict']:.2f} | "
            f"{p['speedup_median']:.2f} ({p['speedup_min']:.2f}-{p['speedup_max']:.2f}) | "
            f"{p['speedup_best']:.2f} | {verdict} |"
        )
    return lines
