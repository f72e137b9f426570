"""An HTML gallery of explanations: one picture per input, one overlay per class and method.

:class:`Report` writes each input picture and its overlays as PNG files as they
come (``images/`` and ``overlays/`` under the report's folder), then an
``index.html`` that shows them with the class, its score, the method and the
layer. A text's explanations are shown as highlighted text on the page itself
(one line per method and class, :meth:`Explanation.to_html`). The page is a
single static file with relative links: open it in a browser, copy the folder
anywhere, or attach it to a CI run.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from .explanation import Explanation

__all__ = ["Report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; background: #fafafa; }
header dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
header dt { font-weight: 600; } header dd { margin: 0; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .8rem;
          margin: 1rem 0; overflow-x: auto; }
section h2 { font-size: 1.05rem; margin: 0 0 .6rem 0; }
table { border-collapse: collapse; }
th { text-align: left; vertical-align: bottom; padding: .3rem .6rem .3rem .3rem;
     font-weight: 600; white-space: nowrap; font-size: .9rem; }
tr + tr th { vertical-align: middle; }
th small { font-weight: 400; color: #666; }
td { vertical-align: top; padding: .3rem; }
figure { margin: 0; width: 144px; }
figure img { width: 144px; height: auto; display: block; border-radius: 3px; }
figcaption { font-size: .8rem; margin-top: .25rem; line-height: 1.25; }
.source { color: #666; font-size: .8rem; margin: 0 0 .5rem 0; }
td .keras-explainable-text { margin-bottom: .4rem; max-width: 60rem; }
th { text-align: left; }
img.inputs { max-width: 100%; height: auto; display: block; }
table.features td { font-size: .85rem; padding: .1rem .6rem; text-align: right; }
table.features caption { text-align: left; font-weight: 600; font-size: .9rem; }
footer { color: #777; font-size: .8rem; margin-top: 2rem; }
"""


def _slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return slug[:60] or "image"


def _thumbnail(picture: Image.Image, max_size: int) -> Image.Image:
    if max(picture.size) <= max_size:
        return picture
    copy = picture.copy()
    copy.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return copy


class Report:
    """Collects explanations and writes them as PNG files plus an ``index.html`` gallery.

    Args:
        directory: the report's folder (created if needed).
        title: the page title.
        details: ``{label: value}`` lines shown at the top (model, preprocessing, ...).
        max_size: the longest side of the written pictures, in pixels.

    Example:
        >>> report = ke.report.Report("out", title="My model")
        >>> report.add("cat", [ke.explain_prediction(model, "cat.jpg", top_k=3)])
        >>> report.write()
        PosixPath('out/index.html')
    """

    def __init__(
        self,
        directory,
        title: str = "keras-explainable report",
        details: Mapping[str, str] | None = None,
        max_size: int = 512,
    ):
        self.directory = Path(directory)
        self.title = title
        self.details = dict(details or {})
        self.max_size = int(max_size)
        self.files: list[Path] = []
        self._entries: list[dict] = []
        self._stems: set[str] = set()
        for folder in ("images", "overlays"):
            (self.directory / folder).mkdir(parents=True, exist_ok=True)

    def _unique_stem(self, name: str) -> str:
        stem, counter = _slug(name), 2
        unique = stem
        while unique in self._stems:
            unique = f"{stem}_{counter}"
            counter += 1
        self._stems.add(unique)
        return unique

    def _save(self, picture: Image.Image, relative: str) -> str:
        path = self.directory / relative
        _thumbnail(picture, self.max_size).save(path, optimize=True)
        self.files.append(path)
        return relative

    def add(
        self,
        name: str,
        explanations: Sequence[Explanation],
        source: str | None = None,
        merge_words: bool = False,
    ):
        """Write one input's picture and overlays, and remember them for the page.

        Args:
            name: the input's name (e.g. its file name); made unique and file-safe.
            explanations: the input's explanations, one per method (all of the
                same picture, or all of the same text).
            source: where the input came from (shown under its name).
            merge_words: a text's word pieces shown as words (see
                :meth:`Explanation.to_html`).

        Returns:
            the PNG paths written for this input (none for a text).
        """
        if not explanations:
            raise ValueError("`explanations` is empty: pass at least one Explanation.")
        texts = [explanation.tokens is not None for explanation in explanations]
        if any(texts):
            if not all(texts):
                raise ValueError(
                    "`explanations` mixes pictures and texts; add each input's own explanations."
                )
            rows = [(e, e.to_html(merge_words=merge_words)) for e in explanations]
            self._entries.append({"name": name, "source": source, "text": rows})
            return []
        stem = self._unique_stem(Path(name).stem if "." in name else name)
        before = len(self.files)
        picture = explanations[0].image
        rows = []
        image = self._save(picture.convert("RGB"), f"images/{stem}.png")
        for explanation in explanations:
            cells = []
            for rank, target in enumerate(explanation.targets):
                relative = (
                    f"overlays/{stem}__{explanation.method}__{rank + 1}_{_slug(target.label)}.png"
                )
                self._save(explanation.overlay(rank), relative)
                cells.append({"file": relative, "target": target, "rank": rank + 1})
            rows.append({"explanation": explanation, "cells": cells})
        self._entries.append(
            {"name": name, "source": source, "image": image, "size": picture.size, "rows": rows}
        )
        return self.files[before:]

    def add_inputs(self, name: str, explanations: Sequence, source: str | None = None):
        """Write one prediction of a multi-input model: a figure per method, feature tables.

        Args:
            name: the prediction's name; made unique and file-safe.
            explanations: its :class:`InputsExplanation` s, one per method.
            source: where the inputs came from (shown under the name).

        Returns:
            the PNG paths written (one figure per method: a row per class, a
            column per input).
        """
        if not explanations:
            raise ValueError("`explanations` is empty: pass at least one InputsExplanation.")
        stem = self._unique_stem(name)
        before = len(self.files)
        rows = []
        for explanation in explanations:
            relative = f"overlays/{stem}__{explanation.method}.png"
            path = self.directory / relative
            explanation.figure(to_file=path)
            self.files.append(path)
            count = len(explanation.target_ids)
            tables = [
                (part.name, [part.table(i) for i in range(count)])
                for part in explanation.values()
                if part.kind == "features" and part.explained
            ]
            rows.append({"explanation": explanation, "file": relative, "tables": tables})
        self._entries.append({"name": name, "source": source, "inputs": rows})
        return self.files[before:]

    def _inputs_html(self, entry) -> str:
        """One multi-input prediction: per method its figure, then each feature vector's table."""
        escape = html.escape
        parts = []
        for row in entry["inputs"]:
            explanation = row["explanation"]
            title = escape(explanation.method_title)
            layer = (
                f" <small>layer: {escape(explanation.layer)}</small>" if explanation.layer else ""
            )
            classes = ", ".join(
                f"#{rank} {escape(label)} (score {score:.4g})"
                for rank, (label, score) in enumerate(
                    zip(explanation.labels, explanation.scores), 1
                )
            )
            parts.append(
                f'<h3>{title}{layer}</h3><p class="source">{classes}</p>'
                f'<img src="{escape(row["file"])}" alt="{title}: every input" class="inputs">'
            )
            for input_name, tables in row["tables"]:
                header = "".join(f"<th>{escape(label)}</th>" for label in explanation.labels)
                by_feature = {}
                for table in tables:
                    for feature, value, weight in table:
                        by_feature.setdefault((feature, value), []).append(weight)
                body = "".join(
                    f"<tr><td>{escape(feature)}</td><td>{value:.4g}</td>"
                    + "".join(f"<td>{weight:+.4g}</td>" for weight in weights)
                    + "</tr>"
                    for (feature, value), weights in by_feature.items()
                )
                parts.append(
                    f'<table class="features"><caption>{escape(input_name)}: weight per feature'
                    f"</caption><tr><th>feature</th><th>value</th>{header}</tr>{body}</table>"
                )
        source = f'<p class="source">{escape(entry["source"])}</p>' if entry["source"] else ""
        return f"<section><h2>{escape(entry['name'])}</h2>{source}{''.join(parts)}</section>"

    def _text_html(self, entry) -> str:
        """One text: a row per method, each explained class highlighted on its own line."""
        escape = html.escape
        rows = "".join(
            f"<tr><th>{escape(explanation.method_title)}</th><td>{highlighted}</td></tr>"
            for explanation, highlighted in entry["text"]
        )
        text = escape(entry["text"][0][0].text or "")
        source = f" ({escape(entry['source'])})" if entry["source"] else ""
        return (
            f'<section><h2>{escape(entry["name"])}</h2><p class="source">{text}{source}</p>'
            f"<table>{rows}</table></section>"
        )

    def _entry_html(self, entry) -> str:
        """One input: a table with a column per method and a row per explained class."""
        if "text" in entry:
            return self._text_html(entry)
        if "inputs" in entry:
            return self._inputs_html(entry)
        escape = html.escape
        rows = entry["rows"]
        headers = []
        for row in rows:
            explanation = row["explanation"]
            layer = ""
            if explanation.layer:
                layer = f"<br><small>layer: {escape(explanation.layer)}</small>"
            headers.append(f"<th>{escape(explanation.method_title)}{layer}</th>")
        width, height = entry["size"]
        picture = (
            f'<td rowspan="{max(len(row["cells"]) for row in rows)}"><figure>'
            f'<img src="{escape(entry["image"])}" alt="input {escape(entry["name"])}">'
            f"<figcaption>input ({width}×{height})</figcaption></figure></td>"
        )
        body = []
        for rank in range(max(len(row["cells"]) for row in rows)):
            first = next(row["cells"][rank]["target"] for row in rows if rank < len(row["cells"]))
            label = (
                f"<th>#{rank + 1} {escape(first.label)}<br><small>class {first.target}<br>"
                f"score {first.score:.4g}<br>p = {first.probability:.3f}</small></th>"
            )
            cells = []
            for row in rows:
                if rank >= len(row["cells"]):
                    cells.append("<td></td>")
                    continue
                target = row["cells"][rank]["target"]
                title = row["explanation"].method_title
                alt = f"{title} for {target.label}"
                other = ""  # a method that explained another class at this rank says which
                if target.target != first.target:
                    other = f"<figcaption>{escape(target.label)}</figcaption>"
                cells.append(
                    f'<td><figure><img src="{escape(row["cells"][rank]["file"])}" '
                    f'alt="{escape(alt)}" title="{escape(alt)}">{other}</figure></td>'
                )
            body.append(f"<tr>{picture if rank == 0 else ''}{label}{''.join(cells)}</tr>")
        source = f'<p class="source">{escape(entry["source"])}</p>' if entry["source"] else ""
        return (
            f"<section><h2>{escape(entry['name'])}</h2>{source}<table>"
            f"<tr><th></th><th></th>{''.join(headers)}</tr>{''.join(body)}</table></section>"
        )

    def html(self) -> str:
        """The page's HTML."""
        from . import __version__, engine

        escape = html.escape
        backend_name = engine.backend_name()
        details = "".join(
            f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in self.details.items()
        )
        body = "\n".join(self._entry_html(entry) for entry in self._entries)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<header><h1>{escape(self.title)}</h1><dl>{details}</dl></header>\n<main>\n"
            f"{body}\n</main>\n<footer>Made with keras-explainable {escape(__version__)} on the "
            f"{escape(backend_name)} backend of Keras. Heatmaps: red = high, blue = low; texts: "
            "green = for the class, red = against it; the score is the model's output for the "
            "class, p its softmax probability.</footer>\n"
            "</body>\n</html>\n"
        )

    def write(self) -> Path:
        """Write ``index.html`` (again, if called twice) and return its path."""
        path = self.directory / "index.html"
        path.write_text(self.html(), encoding="utf-8")
        return path

    def __len__(self):
        return len(self._entries)

    @property
    def texts(self) -> int:
        """How many of the inputs are texts."""
        return sum("text" in entry for entry in self._entries)

    def __repr__(self):
        return (
            f"<Report {os.fspath(self.directory)!r}: {len(self)} inputs, {len(self.files)} files>"
        )
