"""A prompt that is not valid Unicode text (a lone surrogate, as Python decodes a non-UTF-8 byte from
argv or a file name) is a PromptError naming the argument, on every path (issue 16 #10)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from sdclip import ClipScorer, inspection
from sdclip.errors import PromptError
from sdclip.models.tokenizer import load_tokenizer
from sdclip.prompts.chunking import chunk_prompt
from sdclip.prompts.lists import as_prompt_list, check_unicode, one_per
from sdclip.prompts.parser import parse_prompt
from sdclip.prompts.tokens import tokenize_prompt

BAD = "a \udcff cat"  # what os.fsdecode / argv make of b"a \xff cat"


def _message(name: str) -> str:
    return rf"^{name}: must be valid UTF-8 text, but character 2 is a lone surrogate '\\udcff' \(a byte that is not UTF-8"


def test_lists_name_the_item() -> None:
    assert check_unicode("猫 🐱", "prompt") == "猫 🐱"
    with pytest.raises(PromptError, match=_message("prompt")):
        as_prompt_list(BAD, "prompt")
    with pytest.raises(PromptError, match=_message(r"texts\[1\]")):
        as_prompt_list(["ok", BAD], "texts")
    with pytest.raises(PromptError, match=_message("prompts")):
        one_per(BAD, 3, name="prompts", what="prompt", per="image")


@pytest.mark.parametrize("syntax", ["plain", "a1111", "comfy"])
def test_parsing_and_tokenizing(syntax: str) -> None:
    with pytest.raises(PromptError, match=_message("prompt")):
        parse_prompt(BAD, syntax)
    with pytest.raises(PromptError, match=_message("prompt")):
        chunk_prompt(BAD, load_tokenizer(), syntax=syntax)
    with pytest.raises(PromptError, match=_message("prompt")):
        tokenize_prompt(BAD, load_tokenizer(), syntax=syntax)
    with pytest.raises(PromptError, match=_message("prompt")):
        inspection.tokens(BAD, syntax=syntax)


def test_conditioner(conditioner) -> None:
    with pytest.raises(PromptError, match=_message("prompt")):
        conditioner.encode(BAD)
    with pytest.raises(PromptError, match=_message(r"prompt\[1\]")):
        conditioner.encode(["a dog", BAD])
    with pytest.raises(PromptError, match=_message("negative_prompt")):
        conditioner.encode("a dog", BAD)
    with pytest.raises(PromptError, match=_message("prompt")):
        conditioner.parse(BAD, syntax="a1111")
    with pytest.raises(PromptError, match=_message("prompt")):
        inspection.tokens(BAD, conditioner)


def test_scorer(clip_model_folder) -> None:
    scorer = ClipScorer.from_pretrained(clip_model_folder, device="cpu")
    image = Image.new("RGB", (32, 32))
    with pytest.raises(PromptError, match=_message("prompts")):
        scorer.score([image], BAD)
    with pytest.raises(PromptError, match=_message(r"texts\[0\]")):
        scorer.text_features([BAD])


def test_cli_argument_with_a_non_utf8_byte() -> None:
    done = subprocess.run([sys.executable, "-m", "sdclip", "tokens", b"a \xff cat"], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    # the command line checks its arguments first, so the message names the argument and the bytes
    assert len(lines) == 1 and "argument PROMPT: prompt 'a \ufffd cat' holds bytes that are not UTF-8" in lines[0]
