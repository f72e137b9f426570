"""The explaining engine: batching, compiling and collecting."""

from .explaining import explain, explain_step

__all__ = ["explain", "explain_step"]
