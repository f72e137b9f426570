"""``python -m keras_explainable.methods``: print the methods table of the docs (Markdown)."""

from .registry import markdown_table

print(markdown_table(), end="")
