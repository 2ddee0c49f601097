"""Tests for sdclip.prompts.chunking against the real CLIP tokenizer.

Chunk boundaries are checked with prompts made of words that are one token each ("cat" 2368, "dog" 1929,
"," 267; asserted below), so every expected chunk size is counted by hand and written out.
"""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdclip.prompts import chunking
from sdclip.prompts.chunking import ChunkedPrompt, TokenChunk, chunk_prompt, empty_chunk
from sdclip.errors import PromptError
from sdclip.models.tokenizer import SHIPPED_TOKENIZER_DIR, load_tokenizer

BOS, EOS, CAT, DOG, COMMA = 49406, 49407, 2368, 1929, 267


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def sizes(prompt: ChunkedPrompt) -> list[int]:
    return [chunk.n_tokens for chunk in prompt.chunks]


def cats(n: int) -> str:
    return "cat " * n


def dogs(n: int) -> str:
    return "dog " * n


def test_words_used_below_are_one_token_each(tok) -> None:
    assert tok(["cat", "dog", ",", "cat,"], add_special_tokens=False).input_ids == [[CAT], [DOG], [COMMA], [CAT, COMMA]]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, EOS)


# ---------------------------------------------------------------- plain = diffusers

PLAIN_PROMPTS = [
    "",
    "a photo of a cat",
    "🐱 猫 café naïve Ünïcödé, ✨🚀",
    "!!!,,,...;;;((( ]]] ??? --- ''' \"\" @#$%^&*",
    "a (cat:1.5) [dog] BREAK \\(x\\)",
    cats(100),
    "masterpiece, best quality, " * 20,
]


@pytest.mark.parametrize("text", PLAIN_PROMPTS)
def test_plain_equals_the_tokenizer_call_diffusers_makes(tok, text: str) -> None:
    prompt = chunk_prompt(text, tok)
    expected = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
    [chunk] = prompt.chunks
    assert chunk.ids == tuple(expected)
    assert chunk.weights == (1.0,) * 77


def test_plain_truncated_text_is_what_diffusers_warns_about(tok) -> None:
    prompt = chunk_prompt(cats(80) + dogs(3), tok)
    assert prompt.truncated_text == "cat cat cat cat cat dog dog dog"  # tokens 76..83
    assert prompt.chunks[0].n_tokens == 75
    assert chunk_prompt(cats(75), tok).truncated_text is None
    assert chunk_prompt("a photo of a cat", tok).chunks[0].n_tokens == 5


def test_empty_prompt_and_empty_chunk(tok) -> None:
    expected = (BOS,) + (EOS,) * 76
    assert empty_chunk(tok) == TokenChunk(ids=expected, weights=(1.0,) * 77, n_tokens=0)
    for syntax in ("plain", "a1111", "comfy"):
        for truncate in (True, False):
            prompt = chunk_prompt("", tok, syntax=syntax, truncate=truncate)
            assert prompt == ChunkedPrompt(chunks=(empty_chunk(tok),), truncated_text=None)


def test_tokenizer_with_its_own_pad_token_pads_after_eos() -> None:
    from transformers import CLIPTokenizer

    sd2_like = CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER_DIR), pad_token="!")  # SD 2.x pads with "!"
    assert sd2_like.pad_token_id == 0
    expected = (BOS, CAT, EOS) + (0,) * 74
    for syntax, truncate in [("plain", True), ("a1111", False), ("comfy", False)]:
        assert chunk_prompt("cat", sd2_like, syntax=syntax, truncate=truncate).chunks[0].ids == expected
    assert empty_chunk(sd2_like).ids == (BOS, EOS) + (0,) * 75


# ---------------------------------------------------------------- A1111 layout


@pytest.mark.parametrize(
    ("text", "expected_sizes"),
    [
        (cats(1), [1]),
        (cats(75), [75]),
        (cats(76), [75, 1]),
        (cats(150), [75, 75]),
        (cats(151), [75, 75, 1]),
        # comma backtrack: a full chunk hands the tokens after its last comma on, if that comma is within 20
        (cats(60) + ", " + dogs(20), [61, 20]),  # comma at 60: 14 dogs move, 6 more follow
        (cats(55) + ", " + dogs(30), [56, 30]),  # comma at 55, exactly 20 back: moves
        (cats(54) + ", " + dogs(31), [75, 11]),  # comma at 54, 21 back: no backtrack
        (cats(74) + ", " + dogs(5), [75, 5]),  # the comma is the 75th token: nothing to move
        (cats(75) + ", " + dogs(5), [75, 6]),  # a comma opening a chunk is not remembered
        # BREAK
        ("cat BREAK dog", [1, 1]),
        ("BREAK cat", [0, 1]),  # a leading BREAK closes an empty first chunk
        ("cat BREAK", [1]),  # a trailing BREAK adds nothing
        ("BREAK", [0]),
        ("cat BREAK BREAK dog", [1, 0, 1]),  # each further BREAK adds an empty chunk
        (cats(75) + "BREAK dog", [75, 1]),  # BREAK on a full chunk: no empty chunk between
        (cats(76) + "BREAK dog", [75, 1, 1]),
        ("(cat BREAK dog)", [3]),  # weighted BREAK is the word "break"
    ],
)
def test_a1111_chunk_sizes(tok, text: str, expected_sizes: list[int]) -> None:
    prompt = chunk_prompt(text, tok, syntax="a1111", truncate=False)
    assert sizes(prompt) == expected_sizes
    assert prompt.truncated_text is None


def test_a1111_backtrack_moves_tokens_with_their_weights(tok) -> None:
    prompt = chunk_prompt(dogs(60) + ", (" + cats(20) + ":1.5)", tok, syntax="a1111", truncate=False)
    first, second = prompt.chunks
    assert first.tokens == (DOG,) * 60 + (COMMA,)
    assert first.weights == (1.0,) * 77
    assert second.tokens == (CAT,) * 20
    assert second.weights == (1.0,) + (1.5,) * 20 + (1.0,) * 56


def test_a1111_weights_and_layout(tok) -> None:
    [chunk] = chunk_prompt("a (cat:1.5) [dog]", tok, syntax="a1111", truncate=False).chunks
    assert chunk.ids == (BOS, 320, CAT, DOG, EOS) + (EOS,) * 72
    assert chunk.weights == (1.0, 1.0, 1.5, 1 / 1.1) + (1.0,) * 73
    assert chunk.n_tokens == 3 and chunk.tokens == (320, CAT, DOG)


def test_a1111_weighted_break_keeps_its_weight(tok) -> None:
    [chunk] = chunk_prompt("(cat BREAK dog)", tok, syntax="a1111", truncate=False).chunks
    assert chunk.tokens == (CAT, tok.convert_tokens_to_ids("break</w>"), DOG)
    assert chunk.weights[1:4] == (1.1, -1.1, 1.1)


def test_plain_untruncated_is_a1111_without_syntax(tok) -> None:
    text = cats(60) + ", " + dogs(20)
    assert sizes(chunk_prompt(text, tok, syntax="plain", truncate=False)) == [61, 20]
    assert sizes(chunk_prompt("cat BREAK dog", tok, syntax="plain", truncate=False)) == [3]
    [chunk] = chunk_prompt("(cat)", tok, syntax="plain", truncate=False).chunks
    assert chunk.tokens == (263, CAT, 264) and set(chunk.weights) == {1.0}


@pytest.mark.parametrize(
    ("text", "kept", "truncated_text"),
    [
        (cats(80), 75, "cat cat cat cat cat"),
        (cats(60) + ", " + dogs(20), 75, "dog dog dog dog dog dog"),  # no backtrack: the first 75 stay
        ("cat BREAK dog", 1, "dog"),
        ("cat BREAK", 1, None),
        ("cat BREAK BREAK", 1, None),
        ("BREAK cat", 0, "cat"),
        (cats(75), 75, None),
    ],
)
def test_a1111_truncate_keeps_the_first_chunk(tok, text: str, kept: int, truncated_text: str | None) -> None:
    prompt = chunk_prompt(text, tok, syntax="a1111", truncate=True)
    assert sizes(prompt) == [kept]
    assert prompt.truncated_text == truncated_text


# ---------------------------------------------------------------- ComfyUI layout


@pytest.mark.parametrize(
    ("text", "expected_sizes"),
    [
        (cats(75), [75]),
        (cats(76), [75, 1]),  # one run of 76 tokens: large, so it splits
        (cats(71) + "(dog dog dog dog dog:1.2)", [71, 5]),  # 5 tokens do not fit in 4: the run moves
        (cats(71) + "(dog dog dog dog dog dog dog:1.2)", [71, 7]),  # 7 < 8: still moves whole
        (cats(71) + "(dog dog dog dog dog dog dog dog:1.2)", [75, 4]),  # 8 tokens: split, 4 + 4
        (cats(70) + "(dog dog dog dog dog:1.2)", [75]),  # exactly fits
        (cats(60) + ", " + dogs(20), [75, 6]),  # no comma backtrack in ComfyUI
        ("cat BREAK dog", [3]),  # BREAK is just a word
        (cats(72) + "embedding:foo", [72, 4]),  # "embedding:" starts a group: its 4 tokens move whole
        (cats(150) + "(dog:1.2)", [75, 75, 1]),
    ],
)
def test_comfy_chunk_sizes(tok, text: str, expected_sizes: list[int]) -> None:
    prompt = chunk_prompt(text, tok, syntax="comfy", truncate=False)
    assert sizes(prompt) == expected_sizes
    assert prompt.truncated_text is None


def test_comfy_split_run_keeps_its_weight_on_both_sides(tok) -> None:
    first, second = chunk_prompt(cats(71) + "(" + dogs(8) + ":1.2)", tok, syntax="comfy", truncate=False).chunks
    assert first.tokens == (CAT,) * 71 + (DOG,) * 4
    assert first.weights == (1.0,) * 72 + (1.2,) * 4 + (1.0,)
    assert second.tokens == (DOG,) * 4
    assert second.weights == (1.0,) + (1.2,) * 4 + (1.0,) * 72
    assert second.ids == (BOS,) + (DOG,) * 4 + (EOS,) * 72


def test_comfy_truncate(tok) -> None:
    prompt = chunk_prompt(cats(71) + "(dog dog dog dog dog:1.2)", tok, syntax="comfy", truncate=True)
    assert sizes(prompt) == [71]
    assert prompt.truncated_text == "dog dog dog dog dog"
    assert chunk_prompt("(cat:1.2)", tok, syntax="comfy").truncated_text is None


def test_unknown_syntax(tok) -> None:
    with pytest.raises(PromptError, match="syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'A1111'"):
        chunk_prompt("cat", tok, syntax="A1111")


def test_examples_in_docstrings() -> None:
    result = doctest.testmod(chunking)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- properties

WORDS = ["cat", "dog", ",", "a", "BREAK", "(red:1.2)", "(blue)", "[x]", "photograph", "(big", "embedding:foo", "\n",
         "supercalifragilisticexpialidocious", "(a b c d e f g h i j:0.8)", "🐱", "\\(", ")"]  # fmt: skip
prompts = st.lists(st.sampled_from(WORDS), max_size=140).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(text=prompts, syntax=st.sampled_from(["plain", "a1111", "comfy"]), truncate=st.booleans())
def test_every_chunk_is_bos_tokens_eos_padding(tok, text: str, syntax: str, truncate: bool) -> None:
    prompt = chunk_prompt(text, tok, syntax=syntax, truncate=truncate)
    assert len(prompt.chunks) >= 1
    if truncate:
        assert len(prompt.chunks) == 1
    for chunk in prompt.chunks:
        n = chunk.n_tokens
        assert 0 <= n <= 75 and len(chunk.ids) == len(chunk.weights) == 77
        assert chunk.ids[0] == BOS and chunk.ids[n + 1] == EOS and set(chunk.ids[n + 2 :]) <= {EOS}
        assert chunk.weights[0] == 1.0 and set(chunk.weights[n + 1 :]) <= {1.0}


@settings(max_examples=150, deadline=None)
@given(text=prompts, syntax=st.sampled_from(["plain", "a1111", "comfy"]))
def test_untruncated_chunks_hold_every_token_in_order(tok, text: str, syntax: str) -> None:
    from sdclip.prompts.parser import parse_prompt

    prompt = chunk_prompt(text, tok, syntax=syntax, truncate=False)
    runs = [run for run in parse_prompt(text, syntax) if not (syntax == "a1111" and run == ("BREAK", -1.0))]
    expected = [t for part, _ in runs for t in tok(part, add_special_tokens=False).input_ids]
    assert [t for chunk in prompt.chunks for t in chunk.tokens] == expected
    assert prompt.truncated_text is None
