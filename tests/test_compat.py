"""Every Keras / numpy internal the library relies on, checked on the installed versions.

Each test fails with a message naming the internal and the version, so an
upgrade that renames or changes one breaks here, loudly, and points at
``keras_explainable/_compat.py``.
"""

from __future__ import annotations

import mmap

import keras
import numpy as np
import pytest

from keras_explainable import _compat

KERAS = f"keras {keras.__version__}"
NUMPY = f"numpy {np.__version__}"


def _update(what: str, version: str = KERAS) -> str:
    return f"{version}: {what}; update keras_explainable/_compat.py"


def _graph():
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")
    features = conv(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dropped = keras.layers.Dropout(0.5, name="drop")(pooled)
    outputs = keras.layers.Dense(2, name="dense")(dropped)
    return keras.Model(inputs, outputs), conv, features, dropped


def test_layer_inbound_nodes():
    model, conv, features, _ = _graph()
    assert hasattr(conv, "_inbound_nodes"), _update("Layer._inbound_nodes no longer exists")
    nodes = _compat.inbound_nodes(conv)
    assert len(nodes) == 1, _update(f"Layer._inbound_nodes has {len(nodes)} nodes for one call")
    node = nodes[0]
    for attribute in ("input_tensors", "output_tensors", "parent_nodes", "operation"):
        assert hasattr(node, attribute), _update(
            f"the Node of Layer._inbound_nodes has no {attribute}"
        )
    assert node.output_tensors[0] is features, _update(
        "Node.output_tensors is not the call's output"
    )
    assert node.operation is conv, _update("Node.operation is not the called layer")
    pool = model.get_layer("pool")
    (pool_node,) = _compat.inbound_nodes(pool)
    assert [parent.operation for parent in pool_node.parent_nodes] == [conv], _update(
        "Node.parent_nodes no longer names the producing layer's call"
    )


def test_inbound_nodes_fallback():
    assert _compat.inbound_nodes(object()) == []


def test_layer_call_has_training_arg():
    _, conv, _, _ = _graph()
    dropout = keras.layers.Dropout(0.5)
    for layer in (dropout, conv):
        flag = getattr(layer, "_call_has_training_arg", None)
        assert isinstance(flag, bool), _update(
            f"{type(layer).__name__}._call_has_training_arg is no longer a bool"
        )
    assert _compat.call_has_training_arg(dropout), _update(
        "Dropout._call_has_training_arg is False although Dropout.call takes training"
    )
    model, *_ = _graph()
    assert _compat.call_has_training_arg(model), _update(
        "Functional._call_has_training_arg is False; keras.Function runs would drop training="
    )


def test_call_has_training_arg_fallback():
    class Plain:
        def call(self, x, training=None):
            return x

    class NoTraining:
        def call(self, x):
            return x

    assert _compat.call_has_training_arg(Plain())
    assert not _compat.call_has_training_arg(NoTraining())
    assert not _compat.call_has_training_arg(object())


def test_keras_tensor_history():
    model, conv, features, _ = _graph()
    assert hasattr(features, "_keras_history"), _update(
        "KerasTensor._keras_history no longer exists"
    )
    history = _compat.keras_history(features)
    assert history is not None, _update(
        "KerasTensor._keras_history is not (operation, node, tensor)"
    )
    operation, node_index, tensor_index = history
    assert operation is conv and node_index == 0 and tensor_index == 0, _update(
        f"KerasTensor._keras_history is {history!r}, not (layer, 0, 0)"
    )
    assert _compat.keras_history(model.outputs[0])[0] is model.get_layer("dense")
    assert _compat.keras_history(np.zeros(2)) is None


def test_function_run_through_graph():
    model, _, _, dropped = _graph()
    function = keras.Function(model.inputs[0], model.outputs[0])
    assert hasattr(function, "_run_through_graph"), _update(
        "keras.Function._run_through_graph no longer exists"
    )
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 2)).astype("float32")
    seen = []

    def in_mode(training):
        def wrap(operation):
            seen.append(operation.name)
            if not _compat.call_has_training_arg(operation):
                return operation

            def call(*args, **kwargs):
                kwargs["training"] = training
                return operation(*args, **kwargs)

            return call

        return wrap

    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(_compat.run_through_graph(function, x, in_mode(False)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert {"conv", "pool", "drop", "dense"} <= set(seen), _update(
        "keras.Function._run_through_graph no longer calls operation_fn per operation"
    )
    # training=True reaches the Dropout through operation_fn: the output changes.
    keras.utils.set_random_seed(0)
    trained = keras.ops.convert_to_numpy(_compat.run_through_graph(function, x, in_mode(True)))
    assert not np.allclose(trained, expected), _update(
        "keras.Function._run_through_graph ignores what operation_fn returns (training= is lost)"
    )


def test_run_through_graph_fallback():
    class Public:
        def __call__(self, inputs):
            return inputs * 2

    assert _compat.run_through_graph(Public(), 3, lambda operation: operation) == 6


def test_imagenet_utils():
    module = _compat.imagenet_utils()
    assert module is not None, _update(
        "neither keras.applications.imagenet_utils nor keras.src.applications.imagenet_utils "
        "has decode_predictions and CLASS_INDEX_PATH"
    )
    assert callable(module.decode_predictions)
    assert str(module.CLASS_INDEX_PATH).endswith("imagenet_class_index.json"), _update(
        f"imagenet_utils.CLASS_INDEX_PATH is {module.CLASS_INDEX_PATH!r}"
    )


@pytest.mark.parametrize("view", [False, True])
def test_numpy_memmap_mapping(tmp_path, view):
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(24, dtype="float32").reshape(6, 4))
    array = np.load(path, mmap_mode="r")
    if view:
        array = array[2:]
    assert isinstance(getattr(array, "_mmap", None), mmap.mmap), _update(
        "np.memmap._mmap is no longer the array's mmap.mmap", NUMPY
    )
    mapping = _compat.memmap_mapping(array)
    assert mapping is array._mmap
    assert _compat.memmap_mapping(np.zeros(3)) is None


def test_memmap_mapping_fallback(tmp_path):
    """Without ``_mmap`` the public ``.base`` chain still finds the mapping."""
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(24, dtype="float32").reshape(6, 4))
    array = np.load(path, mmap_mode="r")
    expected = array._mmap
    view = array[1:]
    for candidate in (array, view):
        candidate._mmap = None
    assert _compat.memmap_mapping(view) is expected
    assert _compat.memmap_mapping(array) is expected


def test_multi_head_attention_softmax_and_flash_flag():
    attention = keras.layers.MultiHeadAttention(2, 2, name="attention")
    x = np.random.default_rng(0).normal(size=(1, 3, 4)).astype("float32")
    attention(x, x)
    softmax = _compat.attention_softmax(attention)
    assert softmax is not None and hasattr(attention, "_softmax"), _update(
        "MultiHeadAttention._softmax (the Softmax sub-layer) no longer exists"
    )
    assert isinstance(softmax, keras.layers.Softmax), _update(
        "MultiHeadAttention._softmax is not a Softmax layer"
    )
    seen = []
    original = softmax.call

    def spy(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    softmax.call = spy
    try:
        _, scores = attention(x, x, return_attention_scores=True)
    finally:
        del softmax.call
    assert len(seen) == 1, _update(
        "MultiHeadAttention(return_attention_scores=True) no longer calls its _softmax"
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(seen[0]),
        keras.ops.convert_to_numpy(scores),
        rtol=1e-6,
        err_msg=_update("MultiHeadAttention's _softmax output is not its attention scores"),
    )
    assert getattr(attention, "_flash_attention", "gone") in (None, False, True), _update(
        "MultiHeadAttention._flash_attention is no longer None/False/True"
    )
    assert _compat.flash_attention(attention) is False
    flash = keras.layers.MultiHeadAttention(2, 2, flash_attention=True)
    assert _compat.flash_attention(flash) is True


def test_attention_fallbacks():
    assert _compat.attention_softmax(keras.layers.Dense(2)) is None
    assert _compat.flash_attention(object()) is False


def test_layer_tracked_sublayers():
    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="block")
            self.first = keras.layers.Dense(2, name="first")
            self.items = [keras.layers.Dense(2, name="second"), keras.layers.Dense(2, name="third")]

        def call(self, x):
            return self.items[1](self.items[0](self.first(x)))

    block = Block()
    assert hasattr(block, "_layers"), _update("Layer._layers no longer exists")
    names = [layer.name for layer in _compat.tracked_sublayers(block)]
    assert names == ["first", "second", "third"], _update(
        f"Layer._layers lists {names} for layers assigned to attributes"
    )
    plain = keras.layers.Layer()
    plain.__dict__.pop("_layers", None)  # the fallback: public attributes
    plain.__dict__["inner"] = keras.layers.Dense(1, name="inner")
    assert [layer.name for layer in _compat.tracked_sublayers(plain)] == ["inner"]
