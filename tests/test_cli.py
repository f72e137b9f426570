"""The keras-explainable command: end to end on the embedded demo model, and its errors."""

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_explainable import cli, data
from keras_explainable.explanation import METHODS


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, text):
        self.text.append(text)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _check_report(out: Path, images: int, overlays: int) -> _Links:
    page = out / "index.html"
    links = _parse(page)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    referenced = [image["src"] for image in links.images]
    assert len(written) == images + overlays
    assert set(referenced) == written  # every PNG is on the page ...
    assert len(referenced) == len(written)  # ... once
    for source in referenced:  # ... and every picture on the page exists
        assert (out / source).is_file(), source
        with Image.open(out / source) as picture:
            assert picture.format == "PNG"
    assert all(image.get("alt") for image in links.images)
    return links


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--out", str(out), "--methods", "gradcam,gradients", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    samples = len(data.demo_image_paths())
    links = _check_report(out, images=samples, overlays=samples * 2 * 2)  # 2 methods, top 2
    text = " ".join(links.text)
    for expected in ("Grad-CAM", "Gradients", "layer: features", "circle", "triangle", "score"):
        assert expected in text
    assert str(out / "index.html") in captured.out
    # the explanations themselves: the top class of a sample is its shape
    assert "#1 circle" in " ".join(text.split())


def test_explain_end_to_end_with_a_folder_and_class_names(tmp_path, capsys):
    model = data.demo_model_path()
    folder = tmp_path / "pictures"
    folder.mkdir()
    for path in data.demo_image_paths()[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not a picture: skipped by the folder scan")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({str(i): name for i, name in enumerate(data.DEMO_CLASS_NAMES)}))
    out = tmp_path / "report"
    code = cli.main(
        ["explain", str(model), str(folder), "--method", "scorecam", "--top-k", "3",
         "--layer", "features", "--class-names", str(names), "--out", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2/2" in captured.out  # the progress bar
    links = _check_report(out, images=2, overlays=2 * 3)
    text = " ".join(" ".join(links.text).split())
    assert "Score-CAM" in text and "layer: features" in text and "#3" in text
    assert "Wrote 6 overlay(s) for 2 image(s)" in captured.out


def test_methods_lists_every_method_with_family_and_reference(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, info in METHODS.items():
        assert f"  {name} " in out and info.reference in out
    for family in ("CAM methods:", "gradient methods:", "perturbation methods:"):
        assert family in out


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a PNG")
    garbage = tmp_path / "model.keras"
    garbage.write_text("not a zip archive")
    text = tmp_path / "model.txt"
    text.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    names = tmp_path / "names.txt"
    names.write_text("only\ntwo\n")
    return {"good": good, "bad": bad, "garbage": garbage, "text": text, "empty": empty,
            "names": names, "model": data.demo_model_path(), "tmp": tmp_path}  # fmt: skip


ERRORS = [
    (["explain", "{tmp}/missing.keras", "{good}"], 3, "No such model file: "),
    (["explain", "resnet50vv2", "{good}"], 3, "no keras.applications model named 'resnet50vv2'. "
     "Did you mean resnet50v2"),
    (["explain", "{model}", "{tmp}/missing.png"], 3, "No such image file or folder: "),
    (["explain", "{model}", "{empty}"], 3, "holds no pictures"),
    (["explain", "{model}", "{good}", "--class-names", "{tmp}/none.txt"], 3,
     "No such class-names file"),
    (["explain", "{garbage}", "{good}"], 4, "is not a Keras model: a .keras file is a zip archive"),
    (["explain", "{text}", "{good}"], 4, "is not a Keras model file: expected a .keras or .h5"),
    (["explain", "{model}", "{bad}"], 5, "Cannot decode the image "),
    (["explain", "{model}", "{good}", "--method", "gradkam"], 2,
     "Unknown method 'gradkam'. Did you mean 'gradcam'"),
    (["explain", "{model}", "{good}", "--layer", "featurs"], 2,
     "The model has no layer named 'featurs'. Did you mean 'features', "),
    (["explain", "{model}", "{good}", "--layer", "features", "--method", "gradients"], 2,
     "--layer applies to CAM methods"),
    (["explain", "{model}", "{good}", "--top-k", "0"], 2, "--top-k must be at least 1"),
    (["explain", "{model}", "{good}", "--class-names", "{names}", "--out", "{tmp}/o"], 2,
     "`class_names` has 2 names but the model has 5 outputs"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, message", ERRORS, ids=[e[2][:30] for e in ERRORS])
def test_errors_are_one_line_with_an_exit_code(files, capsys, argv, code, message):
    argv = [part.format(**files) for part in argv]
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("keras-explainable: error: ")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    if "Known methods" in err or "gradkam" in message:
        assert "Known methods: " + ", ".join(METHODS) in err


def test_unknown_option_values_are_usage_errors(files, capsys):
    argv = ["explain", str(files["model"]), str(files["good"]), "--preprocess", "vgg"]
    assert cli.main(argv) == 2
    assert "invalid choice: 'vgg'" in capsys.readouterr().err
    assert cli.main([]) == 2  # no command: the help, on stderr


def test_application_weights_that_cannot_be_downloaded(files, capsys, monkeypatch):
    def offline(**kwargs):  # what keras.utils.get_file raises without a network
        raise Exception(
            "URL fetch failure on https://storage.example/weights.h5: None -- [Errno -2] "
            "Name or service not known"
        )

    monkeypatch.setattr(cli, "_applications", lambda: {"resnet50v2": offline})
    assert cli.main(["explain", "resnet50v2", str(files["good"])]) == 4
    err = capsys.readouterr().err
    assert "Could not load offline with its ImageNet weights" in err
    assert "URL fetch failure" in err and "needs the internet" in err
    assert err.count("\n") == 1


def test_unexpected_failures_are_one_line_too(files, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "explain_prediction", broken)
    argv = ["explain", str(files["model"]), str(files["good"]), "--out", str(files["tmp"] / "o")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err == "keras-explainable: error: RuntimeError: boom second line " \
        "(run with --traceback for details)\n"  # fmt: skip
    assert cli.main(["--traceback", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_the_module_runs_as_a_program(files):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_explainable.cli", "explain", str(files["tmp"] / "x.keras"),
         str(files["good"])],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("keras-explainable: error: No such")
    assert "Traceback" not in result.stderr
