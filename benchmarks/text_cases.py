"""``benchmark.py --methods text``: the token methods on a text classifier.

The model is a word-level classifier of realistic width, random weights
(nothing is downloaded): token ids ``(batch, 128)`` -> ``Embedding(20000, 128)``
-> ``Conv1D(128, 5, relu)`` -> ``GRU(64)`` -> ``Dense(2)``. Cases, all on the
same batch and interleaved with ``model.predict``:

- ``token gradients``, ``token gradient x input``: one backward pass to the
  embedding (target: <= 3x predict for Gradient x Input);
- ``token integrated gradients (K)``: ``n_steps=K`` path points in one pass,
  compared with ``token gradients xK`` (``K`` token-gradient calls back to
  back, what IG replaces) in the same round (target: <= 1.2). One gradient call
  of a 16-row batch takes ~10 ms, too short to time once and multiply by ``K``:
  its timing noise would be multiplied too;
- ``token occlusion``: one token at a time replaced by ``[PAD]``, every
  position one forward pass of the batch (``chunk_size`` positions per pass);
- ``generation (G positions)`` (when KerasHub is installed): a 2-layer GPT-2
  from a small config, Gradient x Input of ``G`` generated tokens given a
  ``P``-token prompt (teacher-forced, ``G`` units in one backward pass),
  against ``predict`` of the same model on the same sequence.
"""

from __future__ import annotations

import numpy as np

import keras_explainable as ke

LENGTH = 128
VOCABULARY = 20000
IG_STEPS = 16
TARGETS = {"token gradient x input": 3.0}
IG_TARGET = 1.2


def build_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    x = layers.Embedding(VOCABULARY, 128, name="embedding")(inputs)
    x = layers.Conv1D(128, 5, padding="same", activation="relu", name="conv")(x)
    x = layers.GRU(64, name="gru")(x)
    outputs = layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="text_classifier")


def inputs(batch: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCABULARY, (batch, LENGTH)).astype("int32")
    lengths = rng.integers(LENGTH // 2, LENGTH + 1, batch)
    ids[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0  # right padding
    return ids, rng.integers(0, 2, batch)


def cases(model, x, y, batch, jit_compile=None):
    """``{name: fn}``: predict and the token methods through the public API."""
    options = {"batch_size": batch, "verbose": 0, "postprocessing": None}
    if jit_compile is not None:
        options["jit_compile"] = jit_compile
    gradient = ke.methods.gradient
    return {
        "predict": lambda: model.predict(x, batch_size=batch, verbose=0),
        "token gradients": lambda: ke.explain(gradient.gradients, model, x, y, **options),
        "token gradient x input": lambda: ke.explain(
            gradient.gradients_x_inputs, model, x, y, **options
        ),
        f"token gradients x{IG_STEPS}": lambda: [
            ke.explain(gradient.gradients, model, x, y, **options) for _ in range(IG_STEPS)
        ],
        f"token integrated gradients ({IG_STEPS})": lambda: ke.explain(
            gradient.integrated_gradients, model, x, y, n_steps=IG_STEPS, **options
        ),
        "token occlusion": lambda: ke.explain(
            ke.methods.perturbation.occlusion,
            model,
            x,
            y,
            window=1,
            stride=1,
            baseline=0,
            chunk_size=16,
            **options,
        ),  # fmt: skip
    }


def generation_cases(prompt_length=24, generated=8, jit_compile=None):
    """A small GPT-2 (KerasHub) and its generation attribution; ``{}`` without KerasHub."""
    try:
        import keras_hub
    except ImportError:
        return {}
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=5000, num_layers=2, num_heads=4, hidden_dim=128, intermediate_dim=512,
        max_sequence_length=128,
    )  # fmt: skip
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, 5000, prompt_length)
    continuation = rng.integers(1, 5000, generated)
    length = prompt_length + generated
    sequence = {
        "token_ids": np.concatenate([prompt, continuation])[None].astype("int32"),
        "padding_mask": np.ones((1, length), "int32"),
    }
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    return {
        "predict (GPT-2)": lambda: lm.predict(sequence, verbose=0),
        f"generation ({generated} positions)": lambda: ke.text.generation_attribution(
            lm, prompt, target_text=continuation, **options
        ),
    }


def ratios(times) -> dict:
    """The text targets from the per-round times: IG vs K gradients, generation vs predict."""
    import statistics

    ig = f"token integrated gradients ({IG_STEPS})"
    result = {}
    k_gradients = times[f"token gradients x{IG_STEPS}"]
    per_round = [t / g for t, g in zip(times[ig], k_gradients)]
    result["ig_vs_k_gradients"] = {
        "median": statistics.median(per_round),
        "best": min(times[ig]) / min(k_gradients),
        "target": IG_TARGET,
    }
    for name in times:
        if name.startswith("generation"):
            per_round = [t / p for t, p in zip(times[name], times["predict (GPT-2)"])]
            result["generation_vs_gpt2_predict"] = {
                "median": statistics.median(per_round),
                "best": min(times[name]) / min(times["predict (GPT-2)"]),
            }
    return result


def markdown(text_ratios) -> list[str]:
    lines = ["", "| text ratio | median | best | target |", "|---|---:|---:|---|"]
    for name, entry in text_ratios.items():
        target = entry.get("target")
        verdict = ""
        if target is not None:
            verdict = f"<= {target} " + ("ok" if entry["median"] <= target else "**missed**")
        lines.append(f"| {name} | {entry['median']:.2f} | {entry['best']:.2f} | {verdict} |")
    return lines
