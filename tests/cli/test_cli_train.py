"""``sdclip train``: a folder of captioned images to a model folder, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sdclip.cli.app import main
from sdclip.testing import TINY_TEXT, TINY_VISION

CONFIG = {"text_config": {**TINY_TEXT, "num_hidden_layers": 1}, "projection_dim": 96,
          "vision_config": {**TINY_VISION, "num_hidden_layers": 1, "patch_size": 16}}  # fmt: skip


@pytest.fixture()
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for n, colour in enumerate(["red", "blue", "green", "white", "black", "yellow"]):
        Image.new("RGB", (20, 20), colour).save(folder / f"{n}.png")
        (folder / f"{n}.txt").write_text(f"a {colour} square")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "broken.txt").write_text("a broken square")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


@pytest.mark.slow
def test_train_writes_a_model_and_reports(data, capsys):
    code = main(["train", "--data", str(data / "data"), "--model", str(data / "config.json"), "--out",
                 str(data / "out"), "--batch-size", "7", "--image-size", "32", "--val-fraction", "0.3",
                 "--labels", "red", "blue", "green", "--no-plot", "--lr", "1e-3"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "bad images skipped" in captured.out and "zero_shot_acc" in captured.out
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "train_log.csv"} <= {
        p.name for p in (data / "out").iterdir()}
    assert json.loads((data / "out" / "config.json").read_text())["vision_config"]["image_size"] == 32


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "{data}/config.json", "--data", "{data}/nowhere"], "no such file or folder"),
    (["--model", "{data}/missing-model", "--data", "{data}/data"], "missing-model"),
    (["--model", "{data}/config.json", "--data", "{data}/data", "--batch-size", "0"], "expected an integer >= 1"),
    (["--model", "{data}/config.json", "--data", "{data}/data", "--val-fraction", "1.5"],
     "val_fraction: expected a number in [0, 1), got 1.5"),
    (["--model", "{data}/config.json", "--data", "{data}/data", "--batch-size", "4", "--group-size", "3"],
     "group_size=3: expected a divisor of batch_size (4)"),
])  # fmt: skip
def test_errors_are_one_line_with_exit_code_2(data, capsys, argv, message):
    try:
        code = main(["train", "--out", str(data / "out"), *[a.format(data=data) for a in argv]])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err

