"""Highlighted text: token weights as coloured HTML, word pieces merged into words.

Framework-free (numpy and the standard library). :func:`highlight` renders one
sequence: each token's background is green for a positive weight (for the
explained class), red for a negative one (against it), its opacity the weight's
size relative to the largest ``|weight|`` of the sequence; the exact value is
in the tooltip. :func:`merge_pieces` joins sub-word pieces (WordPiece ``##``,
SentencePiece ``▁``, byte-level BPE ``Ġ``) into words, summing their weights.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

#: Markers of sub-word tokenizers: a continuation prefix, or a word-start prefix.
CONTINUATION = "##"
WORD_STARTS = ("\u2581", "\u0120")  # SentencePiece "▁", byte-level BPE "Ġ"


def merge_pieces(tokens: Sequence[str], weights) -> tuple[list[str], np.ndarray]:
    """Word pieces joined into words; each word's weight is the sum of its pieces'.

    A piece starting with ``##`` continues the previous word (WordPiece); when
    any token starts with ``▁`` or ``Ġ`` (SentencePiece, byte-level BPE), a
    piece without that prefix continues the previous word. The markers are
    dropped from the words.

    Args:
        tokens: the token strings.
        weights: one weight per token, ``(tokens,)``.

    Returns:
        ``(words, word_weights)``.

    Example:
        >>> merge_pieces(["the", "em", "##bed", "##ding"], [1.0, 0.5, 0.25, 0.25])
        (['the', 'embedding'], array([1., 1.]))
    """
    weights = np.asarray(weights, np.float64)
    if len(tokens) != len(weights):
        raise ValueError(f"{len(tokens)} tokens but {len(weights)} weights; give one per token.")
    starts_marked = any(str(t).startswith(WORD_STARTS) for t in tokens)
    words: list[str] = []
    merged: list[float] = []
    for token, weight in zip(tokens, weights):
        token = str(token)
        if words and token.startswith(CONTINUATION) and len(token) > len(CONTINUATION):
            words[-1] += token[len(CONTINUATION) :]
            merged[-1] += weight
        elif words and starts_marked and not token.startswith(WORD_STARTS):
            words[-1] += token
            merged[-1] += weight
        else:
            words.append(token.lstrip("".join(WORD_STARTS)) if starts_marked else token)
            merged.append(weight)
    return words, np.asarray(merged)


def colour(weight: float, scale: float) -> str:
    """The CSS background of a weight: green (for) or red (against), ``|w| / scale`` opaque."""
    alpha = 0.0 if scale <= 0 else min(1.0, abs(float(weight)) / scale)
    rgb = "0, 160, 60" if weight >= 0 else "220, 40, 40"
    return f"rgba({rgb}, {alpha:.3f})"


def highlight(
    tokens: Sequence[str],
    weights,
    merge_words: bool = False,
    title: str | None = None,
    skip: Sequence[bool] | None = None,
) -> str:
    """One sequence as highlighted HTML (a ``<div>`` of coloured ``<span>``s).

    Args:
        tokens: the token strings.
        weights: one signed weight per token.
        merge_words: join word pieces into words first (:func:`merge_pieces`).
        title: a caption shown above the text (escaped).
        skip: per token, True to leave it out (padding).

    Returns:
        an HTML fragment; every string in it is escaped.
    """
    tokens = [str(t) for t in tokens]
    weights = np.asarray(weights, np.float64).reshape(-1)
    if len(tokens) != len(weights):
        raise ValueError(f"{len(tokens)} tokens but {len(weights)} weights; give one per token.")
    if skip is not None:
        kept = [i for i, s in enumerate(skip) if not s]
        tokens, weights = [tokens[i] for i in kept], weights[kept]
    if merge_words:
        tokens, weights = merge_pieces(tokens, weights)
    finite = weights[np.isfinite(weights)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    spans = [
        f'<span title="{w:+.4g}" style="background: {colour(w, scale)}; padding: 1px 2px; '
        f'border-radius: 3px">{html.escape(t)}</span>'
        for t, w in zip(tokens, weights)
    ]
    caption = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return (
        '<div class="keras-explainable-text" style="line-height: 1.9; font-family: sans-serif">'
        f"{caption}{' '.join(spans)}</div>"
    )


__all__ = ["colour", "highlight", "merge_pieces"]
