"""The keras-explainable command: end to end on the embedded demo model, its errors, and
what it does before Keras is imported (no framework for the fast paths, backend choice).

CLI timings are not tested here (a shared machine is too noisy for that):
``scripts/time_cli.py`` measures them, see docs/benchmarks.md.
"""

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
from keras_explainable.cli import _common, commands, environment
from keras_explainable.cli import files as cli_files
from keras_explainable.data.metadata import read_class_names, write_class_names

METHODS, get_method = _common.registry()


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


def test_explain_a_chosen_output_or_a_regression_value(tmp_path, capsys):
    model = data.demo_model_path()
    picture = data.demo_image_paths()[0]
    argv = ["explain", str(model), str(picture), "--quiet", "--out"]
    code = cli.main([*argv, str(tmp_path / "a"), "--output", "predictions", "--top-k", "2"])
    assert code == 0, capsys.readouterr().err
    text = " ".join(" ".join(_check_report(tmp_path / "a", images=1, overlays=2).text).split())
    assert "classes of output 'predictions'" in text
    code = cli.main(
        [*argv, str(tmp_path / "b"), "--method", "gradients", "--regression", "2", "--decrease"]
    )
    assert code == 0, capsys.readouterr().err
    text = " ".join(" ".join(_check_report(tmp_path / "b", images=1, overlays=1).text).split())
    assert "regression value 2 (decrease) of the first output" in text


def test_methods_lists_every_method_with_family_and_reference(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, info in METHODS.items():
        assert f"  {name} " in out and info.reference in out
    for family in ("CAM methods:", "gradient methods:", "perturbation methods:"):
        assert family in out
    assert "  full_gradients " in out and "(also: fullgrad" in out


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
    (["explain", "{model}", "{good}", "--output", "prediction"], 2,
     "The model has no output named 'prediction'. Did you mean 'predictions'? Its outputs "
     "are ['predictions']"),
    (["explain", "{model}", "{good}", "--output", "3"], 2, "ke.targets.output(3): the model has 1"),
    (["explain", "{model}", "{good}", "--decrease"], 2, "--decrease explains what lowers"),
    (["explain", "{model}", "{good}", "--regression", "--method", "cam"], 2,
     "--output/--regression choose what is explained, which cam cannot follow"),
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

    monkeypatch.setattr(commands, "_applications", lambda: {"resnet50v2": offline})
    assert cli.main(["explain", "resnet50v2", str(files["good"])]) == 4
    err = capsys.readouterr().err
    assert "Could not load offline with its ImageNet weights" in err
    assert "URL fetch failure" in err and "needs the internet" in err
    assert err.count("\n") == 1


def test_unexpected_failures_are_one_line_too(files, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(commands, "explain_prediction", broken)
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


# --------------------------------------------------------------------------- fast paths


_PROBE = """
import json, sys
from keras_explainable.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ("keras", "tensorflow", "jax", "torch", "numpy") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        (["--version"], 0),
        (["methods"], 0),
        (["explain", "{tmp}/missing.keras", "{good}"], 3),
        (["explain", "{model}", "{tmp}/missing.png"], 3),
        (["explain", "{model}", "{good}", "--method", "gradkam"], 2),
        (["explain", "{text}", "{good}"], 4),
        (["explain", "{garbage}", "{good}"], 4),
        (["demo", "--out", "{tmp}"], 2),  # not empty, not the demo's own
        (["explain", "{model}", "{good}", "--decrease"], 2),
        (["explain", "--top-k"], 2),
    ],
    ids=lambda value: value if isinstance(value, int) else " ".join(value)[:40],
)
def test_fast_paths_import_no_framework(files, argv, code):
    argv = [part.format(**files) for part in argv]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    probe = json.loads(result.stderr.strip().splitlines()[-1])
    assert probe == {"code": code, "heavy": []}, result.stderr
    assert "Traceback" not in result.stderr


def test_the_preprocessings_and_extensions_match_the_library():
    from keras_explainable.utils import images

    assert cli.PREPROCESSINGS == {k: v[1] for k, v in images.PREPROCESSINGS.items()}
    assert cli_files.IMAGE_EXTENSIONS == images.IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- names


def test_old_method_spellings_are_accepted_with_a_note(capsys):
    assert _common.method_names("fullgrad,gradcam") == ["full_gradients", "gradcam"]
    err = capsys.readouterr().err
    assert err == (
        "keras-explainable: note: method 'fullgrad' is called 'full_gradients' in the API; "
        "using it.\n"
    )
    assert _common.method_names("gradcam , full_gradients") == ["gradcam", "full_gradients"]
    assert capsys.readouterr().err == ""


def test_the_demo_model_carries_its_class_names(tmp_path, capsys):
    assert read_class_names(data.demo_model_path()) == list(data.DEMO_CLASS_NAMES)
    assert data.DEMO_CLASS_NAMES == ("circle", "square", "triangle", "cross", "star")
    out = tmp_path / "report"
    argv = ["explain", str(data.demo_model_path()), str(data.demo_image_paths()[0]),
            "--top-k", "2", "--out", str(out), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    text = " ".join(" ".join(_parse(out / "index.html").text).split())
    assert "#1 circle" in text and "class_" not in text


def test_class_names_written_into_a_keras_file(tmp_path):
    import keras

    path = tmp_path / "copy.keras"
    path.write_bytes(data.demo_model_path().read_bytes())
    assert read_class_names(path) == list(data.DEMO_CLASS_NAMES)
    write_class_names(path, ["a", "b", "c", "d", "e"])
    assert read_class_names(path) == ["a", "b", "c", "d", "e"]
    original = data.load_demo_model()
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    for mine, theirs in zip(loaded.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert read_class_names(tmp_path / "missing.keras") is None
    (tmp_path / "plain.keras").write_bytes(b"not a zip")
    assert read_class_names(tmp_path / "plain.keras") is None


# --------------------------------------------------------------------------- demo folder


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert cli.main(["demo", "--out", str(mine), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not empty and was not written by `keras-explainable demo`" in err
    assert "--force" in err and err.count("\n") == 1
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # --force writes into it (and says where), keeping the user's file
    argv = ["demo", "--out", str(mine), "--quiet", "--force", "--methods", "gradcam"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert str((mine / "index.html").resolve()) in printed
    assert (mine / "thesis.tex").read_text() == "precious"
    assert (mine / cli.DEMO_MARKER).is_file()


def test_the_demo_reuses_its_own_folder(tmp_path):
    out = tmp_path / "demo"
    assert cli.prepare_demo_folder(out) == out  # created, marked
    (out / "index.html").write_text("an earlier report")
    assert cli.prepare_demo_folder(out) == out  # its own: no --force needed
    empty = tmp_path / "empty"
    empty.mkdir()
    cli.prepare_demo_folder(empty)  # an empty folder is fine too
    assert (empty / cli.DEMO_MARKER).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(cli.CommandError, match="is a file"):
        cli.prepare_demo_folder(tmp_path / "file", force=True)


# --------------------------------------------------------------------------- backend choice


def _installed(*modules):
    return lambda module: module in modules


@pytest.mark.parametrize(
    "environ, installed, configured, expected",
    [
        ({"KERAS_BACKEND": "torch"}, (), None, ("torch", None)),  # the user's choice wins
        ({}, ("tensorflow", "jax"), None, ("tensorflow", None)),  # Keras' default is there
        ({}, ("jax", "torch"), None, ("jax", "tensorflow is not installed")),
        ({}, ("torch",), None, ("torch", "tensorflow is not installed")),
        ({}, ("torch",), "tensorflow", ("torch", "tensorflow is not installed")),
        ({}, ("torch", "jax"), "jax", ("jax", None)),  # keras.json's choice is installed
        ({}, ("torch",), "jax", ("torch", "jax is not installed")),
        ({}, ("tensorflow",), "jax", ("tensorflow", "jax is not installed")),
        ({}, (), None, (None, "tensorflow is not installed, nor JAX or PyTorch")),
        ({"KERAS_BACKEND": ""}, ("jax",), None, ("jax", "tensorflow is not installed")),
    ],
)
def test_choose_backend(environ, installed, configured, expected):
    chosen = environment.choose_backend(environ, _installed(*installed), configured)
    assert chosen == expected


def test_use_installed_backend_before_and_after_keras(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json: Keras would use TensorFlow
    code = (
        "import sys; from keras_explainable.cli import environment as e;"
        "e.is_installed = lambda m: m == 'torch';"
        "import os; print(e.use_installed_backend(), os.environ.get('KERAS_BACKEND'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.split() == ["torch", "torch"], result.stderr
    assert result.stderr == (
        "keras-explainable: using the torch backend (tensorflow is not installed; set "
        "KERAS_BACKEND to choose).\n"
    )
    # once Keras is imported, nothing changes (this test process has imported it)
    environ = {}
    assert environment.use_installed_backend(environ) is not None
    assert environ == {}


def test_quiet_frameworks_keeps_the_users_settings():
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    environment.quiet_frameworks(environ)
    assert environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert environ["GRPC_VERBOSITY"] == "ERROR"


_NOISY = """
import os, sys
from keras_explainable.cli.environment import filtered_stderr
with filtered_stderr():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\\n")
    os.write(2, b"I0000 00:00:1796293685.110380    4735 cudart_stub.cc:31] No cuda drivers\\n")
    os.write(2, b"E0000 00:00:1796293708.433937 4735 cuda_platform.cc:52] failed call to cuInit\\n")
    os.write(2, b"E0000 00:00:1796293708.433937    4735 other.cc:52] a real error\\n")
    print("a Python line", file=sys.stderr)
    os.write(2, b"no newline at the end")
print("after", file=sys.stderr)
"""


def test_framework_start_up_lines_are_filtered_from_stderr():
    result = subprocess.run(
        [sys.executable, "-c", _NOISY], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "E0000 00:00:1796293708.433937    4735 other.cc:52] a real error",
        "a Python line",
        "no newline at the endafter",
    ]
