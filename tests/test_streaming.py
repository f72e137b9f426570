"""Streaming: ``maps_file`` and ``return_maps=False`` keep memory bounded; no retraces.

``ke.explain(..., maps_file="maps.npy")`` writes the maps batch by batch into a
``.npy`` file and returns it memory-mapped: the numbers must be exactly those of
the in-memory run, for arrays, memory-mapped arrays, generators of unknown
length with a ragged last batch and ``PyDataset``s; the file must be a valid
``.npy``; the memory traced while explaining (numpy reports its allocations to
``tracemalloc``) must not grow with the number of samples. After a warm-up,
repeated calls with the same method and a ragged last batch must not retrace
the step, and the several units of a sample must be explained in one vectorized
backward pass.
"""

from __future__ import annotations

import gc
import hashlib
import os
import stat
import tracemalloc

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import backend

try:  # tests/ as a package (python -m pytest) or as a rootdir-relative path (pytest)
    from tests import models
    from tests.test_engine_inputs import BATCH, N, gradcam_step, model, units, x  # noqa: F401
except ImportError:
    import models
    from test_engine_inputs import BATCH, N, gradcam_step, model, units, x  # noqa: F401


@pytest.fixture
def reference(model, x, units):
    """The in-memory run on a plain array."""
    return ke.gradcam(model, x, units, batch_size=BATCH, verbose=0)


def assert_identical(result, expected):
    scores, maps = result
    np.testing.assert_array_equal(scores, expected[0])
    np.testing.assert_array_equal(np.asarray(maps), expected[1])
    assert maps.dtype == np.float32 and scores.dtype == np.float32


def assert_valid_npy(path, expected_maps):
    """A complete .npy that np.load reads (eagerly and memory-mapped), and nothing else left."""
    loaded = np.load(path)
    assert loaded.shape == expected_maps.shape and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, expected_maps)
    with open(path, "rb") as handle:
        assert np.lib.format.read_magic(handle) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        assert (shape, fortran, dtype) == (expected_maps.shape, False, np.dtype("float32"))
        offset = handle.tell()
    assert offset % 64 == 0  # the data is aligned, as numpy writes it
    assert os.path.getsize(path) == offset + expected_maps.nbytes
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


def uneven_batches(x, units, cuts=(0, 3, 4, 9, 10)):
    """A generator (no length): batches of 3, 1, 5 and 1 rows."""
    for start, stop in zip(cuts, cuts[1:]):
        yield x[start:stop], units[start:stop]


# ------------------------------------------------------------------ maps_file


def test_maps_file_from_an_array_equals_the_in_memory_run(model, x, units, reference, tmp_path):
    path = tmp_path / "maps.npy"
    scores, maps = ke.gradcam(model, x, units, batch_size=BATCH, verbose=0, maps_file=path)
    assert isinstance(maps, np.memmap) and not maps.flags.writeable
    assert maps.shape == (N, models.H, models.W, 2)
    assert_identical((scores, maps), reference)
    assert_valid_npy(str(path), reference[1])
    saved = tmp_path / "saved" / "maps.npy"  # the same permissions as a file of np.save
    saved.parent.mkdir()
    np.save(saved, reference[1])
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(saved.stat().st_mode)


def test_maps_file_from_a_generator_of_unknown_length(model, x, units, reference, tmp_path):
    path = str(tmp_path / "generator.npy")
    result = ke.gradcam(
        model, uneven_batches(x, units), batch_size=BATCH, verbose=0, maps_file=path
    )
    assert_identical(result, reference)  # re-cut to 4, 4 and a ragged 2
    assert_valid_npy(path, reference[1])


def test_maps_file_from_a_pydataset(model, x, units, reference, tmp_path):
    class Images(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            rows = slice(BATCH * index, BATCH * index + BATCH)
            return x[rows], units[rows]

    path = tmp_path / "pydataset.npy"
    assert_identical(ke.gradcam(model, Images(), verbose=0, maps_file=path), reference)
    assert_valid_npy(str(path), reference[1])


def test_memory_mapped_inputs_are_read_not_changed(model, x, units, reference, tmp_path):
    inputs = tmp_path / "inputs" / "x.npy"
    inputs.parent.mkdir()
    np.save(inputs, x)
    digest = hashlib.sha256(inputs.read_bytes()).hexdigest()
    mapped = np.load(inputs, mmap_mode="r")
    path = tmp_path / "maps.npy"
    result = ke.gradcam(model, mapped, units, batch_size=BATCH, verbose=0, maps_file=path)
    assert_identical(result, reference)
    np.testing.assert_array_equal(mapped, x)  # still readable, same values
    assert hashlib.sha256(inputs.read_bytes()).hexdigest() == digest


def test_copy_on_write_inputs_keep_their_changes(model, x, units, tmp_path):
    """Pages of a copy-on-write mapping hold the user's private changes: never dropped."""
    np.save(tmp_path / "x.npy", x)
    changed = np.load(tmp_path / "x.npy", mmap_mode="c")
    changed[:] = -changed  # in memory only, not in the file
    expected = ke.gradcam(model, -x, units, batch_size=BATCH, verbose=0)
    assert_identical(ke.gradcam(model, changed, units, batch_size=BATCH, verbose=0), expected)
    np.testing.assert_array_equal(changed, -x)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)


def test_return_maps_false_keeps_no_maps_and_callbacks_get_every_batch(
    model, x, units, reference, tmp_path
):
    class Collect(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.maps = []

        def on_predict_batch_end(self, batch, logs=None):
            self.maps.append(np.array(logs["outputs"][1]))

    collect = Collect()
    scores, maps = ke.gradcam(
        model, x, units, batch_size=BATCH, verbose=0, callbacks=[collect], return_maps=False
    )
    assert maps is None
    np.testing.assert_array_equal(scores, reference[0])
    assert [len(m) for m in collect.maps] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(collect.maps), reference[1])

    path = tmp_path / "only_the_file.npy"
    scores, maps = ke.gradcam(
        model, x, units, batch_size=BATCH, verbose=0, maps_file=path, return_maps=False
    )
    assert maps is None
    np.testing.assert_array_equal(scores, reference[0])
    assert_valid_npy(str(path), reference[1])


# --------------------------------------------------------------------- errors


def test_maps_file_errors_name_the_problem(model, x, units, tmp_path):
    with pytest.raises(ValueError, match=r"must name a \.npy file.*maps\.h5\.npy"):
        ke.gradcam(model, x, units, verbose=0, maps_file=tmp_path / "maps.h5")
    with pytest.raises(ValueError, match="folder .*missing.* does not exist.*os.makedirs"):
        ke.gradcam(model, x, units, verbose=0, maps_file=tmp_path / "missing" / "maps.npy")
    existing = tmp_path / "existing.npy"
    existing.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="already exists; explain never overwrites"):
        ke.gradcam(model, x, units, verbose=0, maps_file=existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(TypeError, match="`maps_file` must be a path"):
        ke.gradcam(model, x, units, verbose=0, maps_file=3)
    with pytest.raises(TypeError, match="`return_maps` must be True or False"):
        ke.gradcam(model, x, units, verbose=0, return_maps="no")
    assert sorted(os.listdir(tmp_path)) == ["existing.npy"]


def test_a_failure_midway_leaves_no_file(model, x, units, tmp_path):
    def batches():
        yield x[:4], units[:4]
        yield np.full_like(x[4:8], np.nan), units[4:8]

    path = tmp_path / "maps.npy"
    with pytest.raises(ValueError, match=r"NaN or Inf values \(sample 4\)"):
        ke.gradcam(model, batches(), batch_size=BATCH, verbose=0, maps_file=path)
    assert os.listdir(tmp_path) == []  # neither maps.npy nor the partial file


def test_a_file_created_while_explaining_is_not_overwritten(model, x, units, tmp_path):
    path = tmp_path / "maps.npy"

    class Intruder(keras.callbacks.Callback):
        def on_predict_end(self, logs=None):  # runs before the maps file is put in place
            path.write_bytes(b"someone else's")

    with pytest.raises(ValueError, match="created by something else.*never overwrites"):
        ke.gradcam(model, x, units, verbose=0, maps_file=path, callbacks=[Intruder()])
    assert path.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["maps.npy"]  # no partial file left either


# ------------------------------------------------------------- bounded memory

SIDE, UNITS = 32, 10  # maps of 40 KiB per sample (every unit): they dominate a batch


def _images(count, batch):
    """A generator of ``count`` images made batch by batch (no array of all of them)."""
    for start in range(0, count, batch):
        rows = min(batch, count - start)
        yield np.random.default_rng(start).random((rows, SIDE, SIDE, 3), dtype=np.float32)


def _peak_traced(model, count, path, batch=100):
    gc.collect()
    tracemalloc.start()
    try:
        scores, maps = ke.gradcam(
            model, _images(count, batch), batch_size=batch, verbose=0, maps_file=path
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scores.shape == (count, UNITS) and maps.shape == (count, SIDE, SIDE, UNITS)
    return peak


def test_memory_stays_bounded_with_maps_file(tmp_path):
    inputs = keras.Input((SIDE, SIDE, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    logits = keras.layers.Dense(UNITS)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, logits)
    ke.gradcam(model, _images(100, 100), batch_size=100, verbose=0)  # compiles the step

    small = _peak_traced(model, 200, tmp_path / "small.npy")
    large = _peak_traced(model, 1000, tmp_path / "large.npy")
    all_maps = 1000 * SIDE * SIDE * UNITS * 4  # 40 MiB
    # A batch of maps (4 MiB) and inputs (1.2 MiB) is in memory at a time, not all maps:
    # measured 6.3-6.6 MiB on TensorFlow and JAX, up to 8.8 MiB on torch (whose cyclic
    # garbage waits for the collector), for 200 and for 1000 samples alike.
    assert large < all_maps / 4, (large, all_maps)
    assert large < 1.25 * small + 2**20, (small, large)
    np.testing.assert_array_equal(
        np.load(tmp_path / "large.npy", mmap_mode="r")[:200], np.load(tmp_path / "small.npy")
    )


# ------------------------------------------------------------------ retracing


def test_no_retrace_after_warm_up_with_ragged_batches_and_repeated_calls(
    model, x, units, reference, tmp_path
):
    step = gradcam_step(model)  # the reference call warmed it up
    traces, calls = step.traces, step.calls
    runs = [
        ke.gradcam(model, x[:7], units[:7], batch_size=BATCH, verbose=0),  # 4 + ragged 3
        ke.gradcam(model, uneven_batches(x, units), batch_size=BATCH, verbose=0),
        ke.gradcam(model, x, units, batch_size=BATCH, verbose=0, maps_file=tmp_path / "maps.npy"),
        ke.gradcam(model, x[:1], units[:1], batch_size=BATCH, verbose=0),  # 1 padded to 4
    ]
    assert gradcam_step(model) is step
    assert step.calls == calls + 2 + 3 + 3 + 1
    if backend.is_compiled_per_shape():  # TensorFlow, JAX: the trace is reused
        assert step.traces == traces == 1
    else:  # PyTorch runs eagerly: the body runs once per batch, nothing is traced
        assert step.traces == step.calls
    assert_identical(runs[0], (reference[0][:7], reference[1][:7]))
    assert_identical(runs[1], reference)
    assert_identical(runs[2], reference)
    np.testing.assert_allclose(runs[3][1], reference[1][:1], atol=1e-5)  # another batch size


def test_short_array_runs_at_its_own_size_unless_a_larger_step_is_compiled(model, x, units):
    """4 samples with batch_size=32 are not padded to 32 (8x the work) on a fresh step;
    once a larger size (at most batch_size) is compiled, short calls pad to it instead
    of tracing again."""
    step = gradcam_step(model)
    compiled = backend.is_compiled_per_shape()

    def sizes_and_traces():
        return sorted(inputs[0][0] for inputs, _ in step.signatures()), step.traces

    first = ke.gradcam(model, x[:3], units[:3], batch_size=32, verbose=0)
    if compiled:
        assert sizes_and_traces() == ([3], 1)
    ke.gradcam(model, x, units, batch_size=8, verbose=0)  # compiles 8 (batches of 8 + 2)
    again = ke.gradcam(model, x[:5], units[:5], batch_size=32, verbose=0)  # 5 padded to 8
    ke.gradcam(model, x[:2], units[:2], batch_size=32, verbose=0)  # 2 padded to 3
    if compiled:
        assert sizes_and_traces() == ([3, 8], 2)
    else:  # PyTorch runs eagerly: nothing compiled to reuse, nothing padded
        assert step.signatures() and step.traces == step.calls
    expected = ke.gradcam(model, x, units, batch_size=N, verbose=0)
    np.testing.assert_allclose(first[1], expected[1][:3], atol=1e-5)
    np.testing.assert_allclose(again[1], expected[1][:5], atol=1e-5)


def _count_backward_passes(monkeypatch):
    """Count the framework's backward calls: ``[backward calls, vectorized maps (TF)]``."""
    count = [0, 0]
    if backend.NAME == "torch":
        import torch

        grad = torch.autograd.grad

        def counted(*args, **kwargs):
            count[0] += 1
            return grad(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", counted)
    elif backend.NAME == "jax":
        import jax

        vjp = jax.vjp

        def counted_vjp(*args, **kwargs):
            out = vjp(*args, **kwargs)

            def pullback(cotangent):
                count[0] += 1
                return out[1](cotangent)

            return (out[0], pullback, *out[2:])

        monkeypatch.setattr(jax, "vjp", counted_vjp)
    else:
        import tensorflow as tf

        gradient = tf.GradientTape.gradient
        vectorized_map = tf.vectorized_map

        def counted_gradient(self, *args, **kwargs):
            count[0] += 1
            return gradient(self, *args, **kwargs)

        def strict_vectorized_map(fn, elems, **kwargs):
            # The units must really be vectorized: no silent fallback to a loop over them.
            count[1] += 1
            return vectorized_map(fn, elems, **{**kwargs, "fallback_to_while_loop": False})

        monkeypatch.setattr(tf.GradientTape, "gradient", counted_gradient)
        monkeypatch.setattr(tf, "vectorized_map", strict_vectorized_map)
    return count


def test_the_units_of_a_sample_share_one_vectorized_backward_pass(model, x, monkeypatch):
    count = _count_backward_passes(monkeypatch)
    every_unit = np.tile(np.arange(models.CLASSES), (N, 1))  # 5 units per sample
    scores, maps = ke.gradcam(model, x, every_unit, batch_size=BATCH, verbose=0, force=True)
    step = gradcam_step(model)
    assert maps.shape == (N, models.H, models.W, models.CLASSES) and step.calls == 3
    # One backward call per batch (or per trace, when compiled), whatever the number of units:
    # a loop over units would make it 5 per batch.
    assert count[0] == step.traces == (3 if backend.NAME == "torch" else 1)
    if backend.NAME == "tensorflow":  # through tf.vectorized_map, converted without a loop
        assert count[1] == 1
    # and the numbers are Grad-CAM's, unit by unit
    act, kernel, _ = models.np_gap_dense_parts(model, x)
    expected = np.maximum(models.np_gradcam_gap_dense(act, kernel, every_unit), 0)
    peak = expected.max(axis=(1, 2), keepdims=True)
    expected = np.where(peak > 0, expected / np.where(peak > 0, peak, 1), 0)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)
