"""The plumbing of meta methods (a method that wraps a method): checks and naming."""

from __future__ import annotations


def check_maps(maps, scores, name):
    if len(scores.shape) != 2 or len(maps.shape) < 2:
        raise ValueError(
            f"The method wrapped by {name} returned scores of shape {tuple(scores.shape)} and "
            f"maps of shape {tuple(maps.shape)}; expected (batch, units) and "
            "(batch, *spatial, units)."
        )


def describe(wrapper, method, meta, **settings):
    name = getattr(method, "__name__", type(method).__name__)
    listed = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    wrapper.__name__ = wrapper.__qualname__ = f"{meta}_{name}"
    wrapper.__doc__ = f"``ke.methods.meta.{meta}({name}, {listed})``: see ``{meta}``."
    wrapper.__wrapped_method__ = method
