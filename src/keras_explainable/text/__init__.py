"""Text models: token attributions, highlighted text, generation attribution.

Token ids are explained at their embedding by the usual methods
(``ke.gradients``, ``ke.gradients_x_inputs``, ``ke.integrated_gradients``,
``ke.smoothgrad``, ``ke.occlusion``: see docs/text.md); this package holds what
is specific to text:

- :func:`highlight`, :func:`merge_pieces`: token weights as highlighted HTML,
  word pieces merged into words;
- :class:`TextEncoder`: a KerasHub preprocessor / tokenizer or a callable as
  ``text -> (model inputs, ids, tokens)``;
- :class:`WordTokenizer`: words -> ids from a vocabulary list or file (Keras
  ``TextVectorization``'s splitting), e.g. for the command line's
  ``--preprocessor vocabulary.txt``;
- ``ke.explain_prediction(model, "a sentence", preprocessor=...)`` runs
  :func:`explain_text`;
- :func:`generation_attribution`: which prompt tokens drove each token a causal
  language model generated (a ``(generated, context)`` matrix, in one step).
"""

from __future__ import annotations

from ._explain import TEXT_METHODS, explain_text
from ._html import highlight, merge_pieces
from ._preprocess import Encoded, TextEncoder
from ._vocabulary import WordTokenizer, read_vocabulary
from .generation import GenerationAttribution, generation_attribution

__all__ = [
    "TEXT_METHODS",
    "Encoded",
    "GenerationAttribution",
    "TextEncoder",
    "WordTokenizer",
    "explain_text",
    "generation_attribution",
    "highlight",
    "merge_pieces",
    "read_vocabulary",
]
