"""The shipped tokenizer is clip-vit-large-patch14's, and works with no weights."""

from __future__ import annotations

import gzip
import json

import pytest

from sdclip.prompts.tokens import tokenize_prompt
from sdclip.models.tokenizer import SHIPPED_TOKENIZER_DIR, load_tokenizer


def test_the_issue_example(tokenizer):
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_vocabulary_size_and_special_tokens(tokenizer):
    vocab = json.loads((SHIPPED_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == len(tokenizer) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer.model_max_length == 77


def test_vocabulary_follows_openai_construction():
    """OpenAI's SimpleTokenizer: 256 byte symbols, the same with </w>, then one token per merge."""
    vocab = json.loads((SHIPPED_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    merges = (SHIPPED_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) - 1 == 49408 - 512 - 2
    tokens = sorted(vocab, key=vocab.get)
    assert tokens[0] == "!" and tokens[256] == "!</w>"
    assert all(tokens[512 + i] == "".join(merge.split()) for i, merge in enumerate(merges[1:]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [49406, 49407]),
        ("A Photo  of\ta CAT", [49406, 320, 1125, 539, 320, 2368, 49407]),  # lower-cased, whitespace folded
        ("cat,dog", [49406, 2368, 267, 1929, 49407]),
    ],
)
def test_tokenization_rules(tokenizer, text, expected):
    assert tokenizer(text).input_ids == expected


def test_tokens_listing_marks_what_falls_past_the_limit(tokenizer):
    tokens = tokenize_prompt("cat " * 80, tokenizer)
    kept = [t for t in tokens if not t.truncated]
    cut = [t for t in tokens if t.truncated]
    assert len(kept) == 77 and kept[-1].text == "<|endoftext|>" and kept[-1].position == 76
    assert len(cut) == 5 and [t.position for t in cut] == [76, 77, 78, 79, 80]
    assert all(t.text == "cat</w>" and t.id == 2368 for t in cut)


def test_load_tokenizer_gives_independent_copies():
    first, second = load_tokenizer(), load_tokenizer()
    first.add_tokens(["<only-in-first>"])
    assert len(first) == 49409 and len(second) == len(load_tokenizer()) == 49408


def test_regeneration_script_reproduces_the_shipped_files(tmp_path, monkeypatch):
    """scripts/make_tokenizer_data.py builds the files from a BPE table; check its construction on a
    small synthetic table (the real table is not in the repo)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_tokenizer_data.py"
    spec = importlib.util.spec_from_file_location("make_tokenizer_data", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    merges = (SHIPPED_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    table = tmp_path / "bpe.txt.gz"
    table.write_bytes(gzip.compress(("header\n" + "\n".join(merges) + "\n").encode()))
    vocab, built_merges = module.build(table)
    shipped = json.loads((SHIPPED_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == shipped and built_merges == merges
