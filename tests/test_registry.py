"""The one method registry: names, defaults, lookups, and everything made from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import keras_explainable as ke
from keras_explainable import explanation, filters
from keras_explainable.methods import registry

ROOT = Path(__file__).resolve().parent.parent

# the shortcuts' defaults as they were before the registry (ke/__init__.py, commit cc81eb9)
PREVIOUS_DEFAULTS = {
    "gradients": ("normalize", False),
    "gradients_x_inputs": ("absolute_normalize", False),
    "integrated_gradients": ("absolute_normalize", False),
    "full_gradients": ("normalize", False),
    "smoothgrad": ("normalize", False),
    **{
        name: ("positive_normalize", True)
        for name in (
            "cam",
            "gradcam",
            "gradcampp",
            "xgradcam",
            "layercam",
            "hirescam",
            "eigencam",
            "scorecam",
            "ablationcam",
        )
    },  # fmt: skip
    "occlusion": ("normalize", False),
    "rise": ("normalize", False),
    # issue 14: the attention methods, resized like CAMs
    "attention_rollout": ("positive_normalize", True),
    "transformer_attribution": ("positive_normalize", True),
}


def test_one_shortcut_per_method_with_the_previous_defaults():
    assert set(registry.METHODS) == set(PREVIOUS_DEFAULTS)
    for name, (post, resizing) in PREVIOUS_DEFAULTS.items():
        spec = registry.METHODS[name]
        assert spec.name == name and spec.family in registry.FAMILIES
        assert spec.postprocessing == post and spec.resizing is resizing
        assert spec.defaults == {"postprocessing": getattr(filters, post), "resizing": resizing}
        assert spec.uses_layer == (spec.family == "CAM")
        assert spec.title and spec.summary and spec.reference
        shortcut = getattr(ke, name)
        assert shortcut.__name__ == name and name in ke.__all__
        assert spec.title in shortcut.__doc__ and f"ke.filters.{post}" in shortcut.__doc__


def test_the_functions_resolve_to_the_public_methods():
    methods = ke.methods
    for name, spec in registry.METHODS.items():
        if name == "smoothgrad":
            continue
        module, attribute = spec.function.split(":")
        assert spec.load() is getattr(getattr(methods, module.rsplit(".", 1)[1]), attribute)
    assert registry.METHODS["full_gradients"].load() is methods.gradient.full_gradients
    # one object per method, so the compiled step is shared by every way in
    smoothgrad = registry.get("smoothgrad")
    assert smoothgrad.load() is smoothgrad.load() is smoothgrad.method
    assert dict(smoothgrad.options) == {"repetitions": 20, "noise": 0.1, "seed": 0}


def test_get_is_case_insensitive_and_knows_the_old_spellings():
    assert registry.get("Grad-CAM") is registry.METHODS["gradcam"]
    assert registry.get(" GRADCAM++ ") is registry.METHODS["gradcampp"]
    assert registry.get("fullgrad") is registry.METHODS["full_gradients"]
    assert registry.get("saliency") is registry.METHODS["gradients"]
    spec = registry.METHODS["rise"]
    assert registry.get(spec) is spec
    with pytest.raises(ValueError, match=r"Did you mean 'gradcam'.*Known methods: cam, gradcam"):
        registry.get("gradcamm")
    with pytest.raises(TypeError, match="ke.explain"):
        registry.get(len)
    for spec in registry.METHODS.values():
        for alias in spec.aliases:
            assert alias == alias.lower() and registry.get(alias) is spec


def test_explain_prediction_and_the_old_names_read_the_same_table():
    assert explanation.METHODS is registry.METHODS
    assert explanation.get_method is registry.get
    assert explanation.MethodInfo is registry.MethodSpec
    assert registry.METHODS["occlusion"].explain_params((64, 32)) == {
        "window": (8, 4),
        "stride": (4, 2),
    }
    assert registry.METHODS["rise"].explain_params((8, 8)) == {"masks": 1000, "seed": 0}


def test_the_docs_methods_table_is_the_registrys():
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- methods table[^\n]*-->\n(.*?)\n<!-- end of methods table -->", text, re.S
    )
    assert found, "docs/methods.md lost its methods table markers"
    assert found[1].strip() == registry.markdown_table().strip(), (
        "docs/methods.md's methods table is out of date: paste "
        "`python -m keras_explainable.methods` between its markers."
    )
    rows = registry.markdown_table().splitlines()[2:]
    assert len(rows) == len(registry.METHODS)
    for row in rows:  # every row has its 7 cells (a bare | in a cell would add one)
        assert len(re.split(r"(?<!\\)\|", row)) == 9, row
