"""Items 10 and 11: bytes that are not UTF-8, and Unicode line separators.

Decisions:

* **File names that are not UTF-8** (``\\xff\\xfe.png``) are scored like any other, and the score file
  keeps the name so that sdclip can read it back: ``--resume`` matches it (scores nothing twice) and
  ``plot-scores`` finds the image. (Python hands such names over as surrogate escapes, ``'\\udcff'``;
  CSV can keep them as the raw bytes with ``errors="surrogateescape"``, JSONL as ``\\udcff`` escapes.)
* **Prompts that are not UTF-8** (a ``\\xff`` byte in ``argv``, which Python turns into ``'\\udcff'``;
  a lone surrogate in the API) are a ``PromptError`` / one line and exit code 2 saying the text is
  not valid UTF-8 (Unicode). Never a ``TypeError`` from the tokenizer.
* **Line separators inside strings** (U+2028, U+0085, and the other characters ``str.splitlines``
  splits on) are part of the string: JSONL is split on ``"\\n"`` only, CSV records by the csv module.
* **``--resume`` on a file cut inside a multi-byte character** treats the cut line like any other
  half-written last line: dropped, and scored again.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ._support import (
    assert_one_line_error, child_env, cli_command, read_rows, run_cli, save_images,
)

ODD_NAME = os.fsdecode(b"\xff\xfe.png")  # '\udcff\udcfe.png', what os.listdir gives for those bytes
BAD_BYTE_PROMPT = "a cat " + os.fsdecode(b"\xff") + " sitting"  # what sys.argv holds for a \xff byte


def _score(model, *rest) -> list:
    return ["score", "--model", model, "--device", "cpu", *rest]


# -- item 10: file names --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_image_whose_name_is_not_utf8_is_scored_resumed_and_plotted(tmp_path, clip_model_folder, capsys,
                                                                       suffix):
    """Issue: with --out the output is left header-only (and a traceback)."""
    from PIL import Image

    folder = tmp_path / "imgs"
    save_images(folder, 2)
    Image.new("RGB", (40, 40), "red").save(folder / ODD_NAME, format="PNG")
    out = tmp_path / f"scores{suffix}"
    args = _score(clip_model_folder, "--images", folder, "--prompt", "a cat", "--out", out)
    result = run_cli(args, capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    rows = read_rows(out)
    assert len(rows) == 3, f"{len(rows)} rows"
    odd = [row for row in rows if os.fsencode(row["image"]).endswith(b"\xff\xfe.png")]
    assert len(odd) == 1 and odd[0]["error"] == "", odd

    again = run_cli([*args, "--resume"], capsys)
    assert again.code == 0 and "Traceback" not in again.err, again.err
    assert len(read_rows(out)) == 3, "resume scored the odd name again (or lost rows)"

    plotted = run_cli(["plot-scores", out, "--out", tmp_path / "plots"], capsys)
    assert plotted.code == 0 and "Traceback" not in plotted.err, plotted.err
    assert "not found" not in plotted.err, plotted.err


# -- item 10: prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["tokens", "encode", "score"])
def test_a_prompt_with_a_byte_that_is_not_utf8_is_one_line(tmp_path, pipeline_folder, clip_model_folder, capsys,
                                                           command):
    """Issue: a prompt with a \\xff byte in `tokens`, `encode`, `score` gives a traceback."""
    if command == "tokens":
        args = ["tokens", BAD_BYTE_PROMPT]
    elif command == "encode":
        args = ["encode", BAD_BYTE_PROMPT, "--model", pipeline_folder, "--device", "cpu",
                "--out", tmp_path / "e.safetensors"]
    else:
        image = save_images(tmp_path, 1)[0]
        args = _score(clip_model_folder, "--images", image, "--prompt", BAD_BYTE_PROMPT, "--out", tmp_path / "s.csv")
    assert_one_line_error(run_cli(args, capsys), "UTF-8")


@pytest.mark.slow
def test_a_real_argv_byte_that_is_not_utf8_is_one_line():
    """The same through a real process, whose argv holds the raw byte (no model needed for `tokens`)."""
    done = subprocess.run(cli_command("tokens", b"a cat \xff sitting"), capture_output=True, env=child_env(),
                          timeout=120)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "UTF-8" in err, err


LONE_SURROGATES = ["a \ud800 cat", "a cat \udcff"]


@pytest.fixture(scope="module")
def api(pipeline_folder, clip_model_folder):
    from sdclip import ClipScorer, TextConditioner

    return TextConditioner.from_pretrained(pipeline_folder, device="cpu"), ClipScorer.from_pretrained(
        clip_model_folder, device="cpu")


@pytest.mark.parametrize("text", LONE_SURROGATES, ids=["d800", "dcff"])
@pytest.mark.parametrize("call", ["encode", "encode-negative", "parse", "chunk_prompt", "inspection.tokens",
                                  "score", "text_features"])
def test_a_lone_surrogate_in_the_api_is_a_prompt_error(api, text, call):
    """Issue: a lone surrogate in the Python API is a TypeError instead of a PromptError."""
    from PIL import Image

    import sdclip
    from sdclip import PromptError, inspection

    cond, scorer = api
    calls = {
        "encode": lambda: cond.encode(text),
        "encode-negative": lambda: cond.encode("a dog", text),
        "parse": lambda: cond.parse(text),
        "chunk_prompt": lambda: sdclip.chunk_prompt(text, cond.tokenizer),
        "inspection.tokens": lambda: inspection.tokens(text),
        "score": lambda: scorer.score(Image.new("RGB", (32, 32)), text),
        "text_features": lambda: scorer.text_features([text]),
    }
    with pytest.raises(PromptError):
        calls[call]()


# -- item 11: resume and line separators ---------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_of_a_file_cut_inside_a_multibyte_character(tmp_path, clip_model_folder, capsys, suffix):
    """Issue: `--resume` on a file cut inside a multi-byte UTF-8 character raises UnicodeDecodeError."""
    save_images(tmp_path / "imgs", 3)
    out = tmp_path / f"scores{suffix}"
    args = _score(clip_model_folder, "--images", tmp_path / "imgs", "--prompt", "un café ☕ sur la table",
                  "--out", out)
    assert run_cli(args, capsys).code == 0
    data = out.read_bytes()
    cut = data.rindex("☕".encode()) + 1  # inside the last row's 3-byte character
    out.write_bytes(data[:cut])
    result = run_cli([*args, "--resume"], capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    rows = read_rows(out)
    assert sorted(Path(row["image"]).name for row in rows) == ["img000.png", "img001.png", "img002.png"]
    assert {row["prompt"] for row in rows} == {"un café ☕ sur la table"}


SEPARATORS = {"U+2028": "\u2028", "U+2029": "\u2029", "U+0085": "\x85", "U+000B": "\x0b", "U+001C": "\x1c"}


@pytest.mark.parametrize("name", ["U+2028", "U+2029", "U+0085"])  # json.dumps escapes the others
def test_a_pairs_file_with_a_line_separator_inside_a_json_string(tmp_path, clip_model_folder, capsys, name):
    """Issue: U+2028 / U+0085 inside JSON strings are rejected as "not valid JSON"."""
    image = save_images(tmp_path, 1)[0]
    prompt = f"a cat{SEPARATORS[name]}on a mat"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"image": image.name, "prompt": prompt}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    result = run_cli(_score(clip_model_folder, "--pairs", pairs, "--out", out), capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert [row["prompt"] for row in read_rows(out)] == [prompt]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("name", list(SEPARATORS))
def test_sdclip_resumes_its_own_output_with_a_line_separator_in_a_prompt(tmp_path, clip_model_folder, capsys,
                                                                         suffix, name):
    """Issue: sdclip's own output with U+2028 / U+0085 in a prompt cannot be resumed."""
    save_images(tmp_path / "imgs", 2)
    prompt = f"a cat{SEPARATORS[name]}on a mat"
    out = tmp_path / f"scores{suffix}"
    args = _score(clip_model_folder, "--images", tmp_path / "imgs", "--prompt", prompt, "--out", out)
    assert run_cli(args, capsys).code == 0
    before = read_rows(out)
    result = run_cli([*args, "--resume"], capsys)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    rows = read_rows(out)
    assert len(rows) == 2 and [row["prompt"] for row in rows] == [prompt, prompt] and rows == before
