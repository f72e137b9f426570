"""The command line on multi-input models: ``explain MODEL --input NAME=FILE ...``.

One tiny image + features classifier saved once per module; the report (a figure per
method, the feature table) carries explain_prediction's weights; bad input as one-line
errors with exit codes.
"""

import re

import keras
import numpy as np
import pytest
from PIL import Image

import keras_explainable as ke
from keras_explainable import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_inputs")
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    features = keras.Input((3,), name="features")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(image)
    h = keras.layers.GlobalAveragePooling2D()(h)
    t = keras.layers.Dense(4, activation="tanh")(features)
    logits = keras.layers.Dense(3)(keras.layers.Concatenate()([h, t]))
    keras.Model([image, features], logits, name="two_inputs").save(folder / "model.keras")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / "cat.png")
    row = np.array([0.5, -1.25, 2.0], np.float32)
    np.save(folder / "row.npy", row)
    (folder / "row.csv").write_text("age,weight,lab\n0.5,-1.25,2.0\n")
    (folder / "bad.csv").write_text("age,weight\n0.5,oops\n")
    keras.backend.clear_session()
    return {p.stem + p.suffix: str(p) for p in folder.iterdir()} | {"tmp": folder, "row": row}


def _main(files, *extra, out="report"):
    argv = ["explain", files["model.keras"], "--out", str(files["tmp"] / out), "--quiet"]
    return cli.main(argv + list(extra))


def test_report_holds_a_figure_per_method_and_the_weights(files, capsys):
    inputs = ["--input", f"image={files['cat.png']}", "--input", f"features={files['row.csv']}"]
    code = _main(files, *inputs, "--method", "gradients,gradcam", "--top-k", "2")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = files["tmp"] / "report"
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == [
        "prediction__gradcam.png", "prediction__gradients.png"]  # fmt: skip
    page = (out / "index.html").read_text()
    assert "Wrote 2 figure(s)" in captured.out and "layer: conv" in page
    assert page.count('class="features"') == 1  # Grad-CAM: the image's branch only
    model = keras.saving.load_model(files["model.keras"])
    expected = ke.explain_prediction(
        model, {"image": files["cat.png"], "features": files["row"]}, method="gradients",
        top_k=2, feature_names=["age", "weight", "lab"],
    )  # fmt: skip
    table = page[page.index('class="features"') :]
    for feature, value, weight in expected["features"].table(0):
        row = re.search(rf"<td>{feature}</td><td>([^<]+)</td><td>([^<]+)</td>", table)
        assert float(row.group(1)) == pytest.approx(value, rel=1e-3)
        assert float(row.group(2)) == pytest.approx(weight, rel=1e-3, abs=1e-6)
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "extra, code, words",
    [
        (["--input", "image"], 2, "NAME=FILE"),
        (["--input", "image=nope.png"], 3, "No such input file"),
        (["--input", "image={cat.png}", "{cat.png}"], 2, "drop"),
        (["--input", "image={cat.png}", "--input", "image={cat.png}"], 2, "twice"),
        (["--input", "imag={cat.png}", "--input", "features={row.npy}"], 2, "Did you mean 'image'"),
        (["--input", "image={cat.png}"], 2, "also needs 'features'"),
        (["--input", "image={cat.png}", "--input", "features={cat.png}"], 2, "is a picture"),
        (["--input", "image={cat.png}", "--input", "features={bad.csv}"], 5, "Cannot read"),
    ],
)
def test_errors_are_one_line_with_exit_codes(files, capsys, extra, code, words):
    extra = [re.sub(r"\{([^}]+)\}", lambda m: files[m.group(1)], part) for part in extra]
    assert _main(files, *extra, out="errors") == code
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1, error
    if "also needs" in words:  # every input is listed with its shape
        assert "'image': (samples, 8, 8, 3), 'features': (samples, 3)" in error
