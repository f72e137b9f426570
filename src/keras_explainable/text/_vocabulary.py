"""A word-level tokenizer from a vocabulary list or file (Keras ``TextVectorization``'s rules).

A model trained on ``keras.layers.TextVectorization`` ids (the layer outside the
model, as Keras recommends for speed) is explained from its vocabulary alone:
``layer.get_vocabulary()`` saved one token per line (the line number is the id:
``""`` padding at 0, ``"[UNK]"`` at 1) and read back by :class:`WordTokenizer`,
which splits text the way the layer does by default (lower case, punctuation
stripped, split on whitespace). Framework-free.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence

#: What ``TextVectorization(standardize="lower_and_strip_punctuation")`` removes.
_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")


def read_vocabulary(path) -> list[str]:
    """The tokens of a vocabulary file, one per line; a token's id is its line number (from 0).

    Blank lines are kept (``TextVectorization``'s padding token is ``""``), except
    the file's final newline.

    Raises:
        ValueError: for a file without tokens.
    """
    with open(path, encoding="utf-8") as file:
        lines = file.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [line.rstrip("\r") for line in lines]
    if not any(tokens):
        raise ValueError(f"The vocabulary file {os.fspath(path)} holds no tokens (one per line).")
    return tokens


class WordTokenizer:
    """``tokenizer(text) -> ids``: words looked up in a vocabulary, unknown words as its OOV id.

    Args:
        vocabulary: the tokens, a token's id being its position, or the path of
            a file of them (one per line, see :func:`read_vocabulary`).
        lowercase: lower-case the text first.
        strip_punctuation: remove ``string.punctuation`` before splitting.
        oov_token: the vocabulary's token for unknown words (``TextVectorization``:
            ``"[UNK]"``); without it in the vocabulary an unknown word is an error.

    Example:
        >>> tokenizer = WordTokenizer(["", "[UNK]", "the", "movie"])
        >>> tokenizer("The movie, again!")
        [2, 3, 1]
        >>> tokenizer.id_to_token(3)
        'movie'
    """

    def __init__(
        self,
        vocabulary: Sequence[str] | str | os.PathLike,
        lowercase: bool = True,
        strip_punctuation: bool = True,
        oov_token: str = "[UNK]",
    ):
        if isinstance(vocabulary, (str, os.PathLike)):
            vocabulary = read_vocabulary(vocabulary)
        self.vocabulary = [str(token) for token in vocabulary]
        if not self.vocabulary:
            raise ValueError("`vocabulary` is empty: give the tokens, a token's id its position.")
        self.index: dict[str, int] = {}
        for position, token in enumerate(self.vocabulary):
            self.index.setdefault(token, position)
        self.lowercase = lowercase
        self.strip_punctuation = strip_punctuation
        self.oov_id = self.index.get(oov_token)

    def words(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = _PUNCTUATION.sub("", text)
        return text.split()

    def __call__(self, text: str) -> list[int]:
        ids = []
        for word in self.words(text):
            found = self.index.get(word, self.oov_id)
            if found is None:
                raise ValueError(
                    f"The word {word!r} is not in the vocabulary, which has no OOV token to "
                    "stand for unknown words; add one (e.g. '[UNK]', TextVectorization's) or "
                    "pass oov_token=."
                )
            ids.append(found)
        if not ids:
            raise ValueError(f"The text {text!r} has no words once standardized.")
        return ids

    def id_to_token(self, token_id: int) -> str:
        return self.vocabulary[int(token_id)]

    def __len__(self):
        return len(self.vocabulary)

    def __repr__(self):
        return f"<WordTokenizer: {len(self)} tokens>"


__all__ = ["WordTokenizer", "read_vocabulary"]
