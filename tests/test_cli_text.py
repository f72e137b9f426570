"""The command line on texts: ``explain MODEL --text ... --preprocessor SPEC`` into the HTML report.

One tiny Embedding -> Conv1D -> Dense classifier, saved once per module; the
three kinds of ``--preprocessor`` (vocabulary file, ``file.py:function`` /
``module:function``, a KerasHub preset folder); the highlighted weights on the
page equal ``ke.explain_prediction``'s; bad input as one-line errors with exit codes.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import cli
from keras_explainable.cli import texts as cli_texts

VOCABULARY = ["", "[UNK]", "the", "movie", "was", "great", "boring", "not"]
PREP = """VOCABULARY = {vocabulary!r}


def encode(text):
    return [VOCABULARY.index(w) if w in VOCABULARY else 1 for w in text.lower().split()]


encode.id_to_token = VOCABULARY.__getitem__


def words(text):
    return text.split()
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_text")
    keras.utils.set_random_seed(0)
    ids = keras.Input((8,), dtype="int32")
    h = keras.layers.Embedding(len(VOCABULARY), 8, name="embedding")(ids)
    h = keras.layers.Conv1D(8, 3, padding="same", activation="tanh")(h)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    keras.Model(ids, outputs, name="sentiment").save(folder / "model.keras")
    (folder / "vocab.txt").write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    (folder / "no_unk.txt").write_text("\n".join(["", "the", "movie"]) + "\n")
    (folder / "texts.txt").write_text("The movie was great!\n\n  the movie was not boring \n")
    (folder / "empty.txt").write_text("\n \n")
    (folder / "prep.py").write_text(PREP.format(vocabulary=VOCABULARY))
    (folder / "nothing").mkdir()
    keras.backend.clear_session()
    names = ("model.keras", "vocab.txt", "no_unk.txt", "texts.txt", "empty.txt", "prep.py",
             "nothing")  # fmt: skip
    return {name.split(".")[0]: str(folder / name) for name in names} | {"tmp": str(folder)}


def _sections(page):
    """Per text section: (heading, {method title: [[span weights] per class]})."""
    found = []
    for section in re.findall(r"<section>(.*?)</section>", page, re.S):
        heading = re.search(r"<h2>(.*?)</h2>", section).group(1)
        rows = {}
        for title, cell in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", section, re.S):
            lines = cell.split('<div class="keras-explainable-text"')[1:]  # one per class
            rows[title] = [[float(w) for w in re.findall(r'<span title="([^"]+)"', line)]
                           for line in lines]  # fmt: skip
        found.append((heading, rows))
    return found


def test_texts_and_a_text_file_into_one_report(files, capsys):
    out = os.path.join(files["tmp"], "report")
    argv = ["explain", files["model"], "--text", "The movie was great",
            "--text-file", files["texts"], "--preprocessor", files["vocab"],
            "--method", "gradients_x_inputs,occlusion", "--top-k", "2", "--out", out,
            "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "Explained 3 text(s)" in capsys.readouterr().out
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    sections = _sections(page)
    assert [s[0] for s in sections] == ["text 1", "text 2", "text 3"]
    assert "texts.txt:3" in page and "the movie was not boring" in page  # line 2 is blank
    assert "vocab.txt (WordTokenizer)" in page
    for _, rows in sections:
        assert len(rows) == 2 and "Occlusion" in rows  # a row per method
        assert all(len(lines) == 2 for lines in rows.values())  # top 2 classes, one line each
    assert not [p for p in os.listdir(os.path.join(out, "overlays"))]  # texts write no PNG
    # the page shows the library's own weights (4 significant digits), padding left out
    model = keras.saving.load_model(files["model"])
    tokenizer = ke.text.WordTokenizer(files["vocab"])
    expected = ke.explain_prediction(
        model, "the movie was not boring", preprocessor=tokenizer, method="gradients_x_inputs",
        top_k=2,
    )  # fmt: skip
    shown = next(iter(sections[2][1].values()))
    assert expected.tokens[:5] == ("the", "movie", "was", "not", "boring")
    for line, target in zip(shown, expected.targets):
        np.testing.assert_allclose(line, target.heatmap[:5], rtol=1e-3, atol=1e-7)


def test_a_function_in_a_file_or_a_module_and_a_keras_hub_preset(files, capsys, monkeypatch):
    keras_hub = pytest.importorskip("keras_hub")
    out = os.path.join(files["tmp"], "function")
    base = ["explain", files["model"], "--text", "the movie was great", "--quiet",
            "--method", "gradients_x_inputs"]  # fmt: skip
    assert cli.main([*base, "--preprocessor", files["prep"] + ":encode", "--out", out]) == 0
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    assert ">great</span>" in page  # encode.id_to_token gives the words
    monkeypatch.syspath_prepend(files["tmp"])
    assert cli.main([*base, "--preprocessor", "prep:encode", "--out", out]) == 0
    # a KerasHub preset folder (what save_to_preset writes): its tokenizer
    preset = os.path.join(files["tmp"], "preset")
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was"]
    )  # 8 ids: the model's vocabulary size
    tokenizer.save_to_preset(preset)
    with open(os.path.join(preset, "config.json"), "w") as file:  # a backbone's config
        json.dump({"module": "keras_hub.models", "class_name": "BertBackbone", "config": {},
                   "registered_name": "keras_hub>BertBackbone"}, file)  # fmt: skip
    assert cli.main([*base, "--preprocessor", preset, "--out", out]) == 0
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    assert "(BertTokenizer)" in page and ">movie</span>" in page
    capsys.readouterr()


ERRORS = [
    (["--text", "a movie"], 2,
     "--text/--text-file need --preprocessor: what turns a text into token ids: a vocabulary"),
    (["--text", "a", "--preprocessor", "{tmp}/missing.txt"], 3,
     "No such preprocessor file or folder: "),
    (["--text", "a", "--preprocessor", "{prep}"], 2, "name the function in it, e.g. "),
    (["--text", "a", "--preprocessor", "{tmp}/missing.py:encode"], 3, "No such preprocessor file"),
    (["--text", "a", "--preprocessor", "{prep}:encoder"], 2, "has no 'encoder'; its callables:"),
    (["--text", "a", "--preprocessor", "no_such_module_here:encode"], 2,
     "cannot import no_such_module_here (ModuleNotFoundError"),
    (["--text", "the movie", "--preprocessor", "{prep}:words"], 2,
     "--text ('the movie'): The preprocessor function returned <U5 values; token ids are "
     "integers"),
    (["--text", "the film", "--preprocessor", "{no_unk}"], 2,
     "The word 'film' is not in the vocabulary, which has no OOV token"),
    (["--text", "a", "--preprocessor", "{nothing}"], 4,
     "Could not load the KerasHub preset"),
    (["--text", "a", "--preprocessor", "{vocab}", "--method", "gradcam"], 2,
     "The method 'gradcam' does not explain token ids; for text use one of gradients, "),
    (["--text", "a", "--preprocessor", "{vocab}", "--layer", "conv1d"], 2,
     "--layer is for pictures; a text is explained at its token embedding"),
    (["{vocab}", "--text", "a", "--preprocessor", "{vocab}"], 2,
     "Explain pictures or texts, not both"),
    (["--text", " ", "--preprocessor", "{vocab}"], 2, "--text number 1 is empty"),
    (["--text-file", "{empty}", "--preprocessor", "{vocab}"], 2, "holds no text"),
    (["--text-file", "{tmp}/none.txt", "--preprocessor", "{vocab}"], 3, "No such text file"),
    (["--preprocessor", "{vocab}", "{tmp}"], 2, "--preprocessor is for texts: add --text"),
    ([], 2, "Give pictures (files or folders) to explain, or a text with --text/--text-file."),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, message", ERRORS, ids=[e[2][:30] for e in ERRORS])
def test_errors_are_one_line_with_an_exit_code(files, capsys, argv, code, message):
    argv = ["explain", files["model"], *[part.format(**files) for part in argv],
            "--out", os.path.join(files["tmp"], "errors"), "--quiet"]  # fmt: skip
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("keras-explainable: error: ")
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_preprocessor_fails_before_any_framework_is_imported(files):
    probe = ("import json, sys\nfrom keras_explainable.cli import main\ncode = main(sys.argv[1:])\n"
             "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch', 'numpy') "
             "if m in sys.modules]\nprint(json.dumps([code, heavy]), file=sys.stderr)")  # fmt: skip
    argv = ["explain", files["model"], "--text", "a", "--preprocessor", "missing.txt"]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                            text=True, env=env, timeout=120)  # fmt: skip
    assert json.loads(result.stderr.strip().splitlines()[-1]) == [3, []], result.stderr


def test_the_cli_knows_the_text_methods_and_the_word_tokenizer_splits_like_keras():
    assert cli_texts.TEXT_METHODS == ke.text.TEXT_METHODS
    tokenizer = ke.text.WordTokenizer(VOCABULARY)
    assert tokenizer("The movie, was GREAT... really!") == [2, 3, 4, 5, 1]
    assert [tokenizer.id_to_token(i) for i in (2, 3)] == ["the", "movie"]
    with pytest.raises(ValueError, match="no words once standardized"):
        tokenizer("?!")
    assert cli_texts.preprocessor_kind("bert_tiny_en_uncased") == "preset"
    assert cli_texts.preprocessor_kind("hf://user/model") == "preset"
    assert cli_texts.preprocessor_kind("package.module:encode") == "callable"
