"""A synthetic sentiment-like text set whose label is decided by planted words, and a
small token classifier trained on it.

Used by ``benchmarks/text_faithfulness.py``. Everything is made offline and is
deterministic from a seed:

- **Vocabulary** (:data:`VOCABULARY`): ``[PAD]`` (id 0), ``[UNK]``, 96 neutral
  filler words, 8 positive and 8 negative words.
- **Sentences**: 8-16 filler words drawn uniformly, then 1-3 words of the
  label's polarity (positive: label 1, negative: label 0) planted at random
  places; padded with ``[PAD]`` to :data:`LENGTH` = 20 ids. Only the planted words
  carry the label, so an explanation that is faithful to the model should put
  them first.
- **Model** ``sentence_cnn``: ``Embedding(116, 16)`` -> ``Conv1D(32, 3, same,
  relu)`` -> ``GlobalMaxPooling1D`` -> ``Dense(2)`` logits (about 3.5k
  parameters), trained with Adam (3e-3) on 4000 sentences for 6 epochs,
  batch 64, and cached as a ``.keras`` file (in the cache of
  ``synthetic_shapes.cache_dir()``, never in the repository), so every backend
  explains the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from synthetic_shapes import cache_dir

LENGTH = 20
TRAIN_SENTENCES = 4000
EPOCHS = 6
BATCH = 64
TRAIN_SEED, TEST_SEED = 21, 22
#: bump when the data or the model changes: the cached model's file name holds it
VERSION = 1

_FILLERS = """
the a an this that these those some every each table river window garden morning evening city
road train paper letter story picture music coffee water bread market office school station
street house door chair lamp book phone screen cloud stone field forest bridge tower boat car
bus ticket box bag coat shirt glass plate spoon clock wall floor roof corner week day night
walked looked opened closed carried moved waited talked wrote read found kept brought turned
crossed passed near under over behind beside after before during with without from into onto
and then also again still already later quite rather almost around along through across
""".split()
POSITIVE = (
    "wonderful",
    "great",
    "lovely",
    "excellent",
    "delightful",
    "superb",
    "brilliant",
    "joyful",
)
NEGATIVE = ("awful", "terrible", "dreadful", "horrible", "miserable", "poor", "boring", "nasty")
VOCABULARY: tuple[str, ...] = ("[PAD]", "[UNK]", *_FILLERS, *POSITIVE, *NEGATIVE)
PAD = 0
_FIRST_PLANTED = 2 + len(_FILLERS)
#: the ids of the planted words (both polarities)
PLANTED_IDS = np.arange(_FIRST_PLANTED, len(VOCABULARY))
assert len(set(VOCABULARY)) == len(VOCABULARY), "duplicate vocabulary words"


def make_dataset(count: int, seed: int):
    """``(ids, labels, planted)``: ``(count, LENGTH)`` int32 ids padded with 0, ``(count,)``
    labels (1 positive, 0 negative), ``(count, LENGTH)`` bool: where words were planted."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, LENGTH), np.int32)
    planted = np.zeros((count, LENGTH), bool)
    labels = rng.integers(0, 2, count).astype(np.int32)
    fillers = np.arange(2, _FIRST_PLANTED)
    for i in range(count):
        words = list(rng.choice(fillers, rng.integers(8, 17)))
        polarity = POSITIVE if labels[i] == 1 else NEGATIVE
        offset = _FIRST_PLANTED + (0 if labels[i] == 1 else len(POSITIVE))
        places = []
        for _ in range(rng.integers(1, 4)):
            place = int(rng.integers(0, len(words) + 1))
            words.insert(place, offset + int(rng.integers(len(polarity))))
            places = [p + (p >= place) for p in places] + [place]
        ids[i, : len(words)] = words
        planted[i, places] = True
    return ids, labels, planted


def decode(ids) -> str:
    """The words of one row of ids, padding left out."""
    return " ".join(VOCABULARY[int(i)] for i in ids if int(i) != PAD)


def build_model():
    """The benchmark's classifier: Embedding -> Conv1D -> global max pooling -> Dense logits."""
    import keras

    layers = keras.layers
    inputs = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    x = layers.Embedding(len(VOCABULARY), 16, name="embedding")(inputs)
    x = layers.Conv1D(32, 3, padding="same", activation="relu", name="conv")(x)
    x = layers.GlobalMaxPooling1D(name="pool")(x)
    outputs = layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="sentence_cnn")


def model_path() -> Path:
    return cache_dir() / "text" / f"sentence_cnn-v{VERSION}.keras"


def load_or_train(verbose: bool = True, retrain: bool = False):
    """The cached trained model (trained and saved first if missing), and a note on it."""
    import keras

    path = model_path()
    if path.exists() and not retrain:
        return keras.saving.load_model(path, compile=False), f"loaded from cache {path}"
    start = time.perf_counter()
    keras.utils.set_random_seed(TRAIN_SEED)
    x, y, _ = make_dataset(TRAIN_SENTENCES, TRAIN_SEED)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=2 if verbose else 0)
    trained = time.perf_counter() - start
    shipped = build_model()  # an uncompiled copy: no optimizer state in the cache
    shipped.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped.save(path)
    note = (
        f"trained on {TRAIN_SENTENCES} sentences x {EPOCHS} epochs with the "
        f"{keras.backend.backend()} backend in {trained:.0f} s, cached at {path}"
    )
    return shipped, note
