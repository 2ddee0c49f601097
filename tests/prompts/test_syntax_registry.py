"""A syntax is one table entry: registering one from a test makes every ``syntax=`` accept it.

The test-only syntax ``"upper"`` (the text upper-cased, weight 1) must encode exactly as the upper-cased
text does with the built-in ``"plain"`` syntax, through the conditioner, its ``parse`` and inspection.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sdclip import inspection
from sdclip.errors import PromptError
from sdclip.prompts.parsed import ParsedPrompt, Run, Syntax
from sdclip.prompts.parser import parse, parse_prompt
from sdclip.prompts.syntaxes import get_syntax, register_syntax, syntax_names, unregister_syntax


def _upper(text: str) -> ParsedPrompt:
    return ParsedPrompt((Run(text.upper(), 1.0),))


@pytest.fixture
def upper():
    register_syntax(Syntax("upper", _upper, weighting=None, layout="diffusers", description="test only"))
    yield "upper"
    unregister_syntax("upper")


PROMPTS = ["a photo of a cat", "an (old) fox, " * 12]  # the second is past 75 tokens


def test_registered_syntax_encodes_like_the_text_it_produces(upper, conditioner) -> None:
    for truncate in (True, False):
        got = conditioner.encode(PROMPTS, syntax=upper, truncate=truncate)
        want = conditioner.encode([p.upper() for p in PROMPTS], syntax="plain", truncate=truncate)
        assert torch.equal(got.prompt_embeds, want.prompt_embeds)
        assert torch.equal(got.prompt_ids, want.prompt_ids)


def test_registered_syntax_in_parse_and_inspection(upper, conditioner) -> None:
    prompt = PROMPTS[1]
    want = conditioner.parse(prompt.upper(), syntax="plain")
    assert conditioner.parse(prompt, syntax=upper) == want
    assert inspection.tokens(prompt, conditioner, syntax=upper).tokens == want
    assert inspection.tokens(prompt, syntax=upper).tokens == inspection.tokens(prompt.upper()).tokens
    assert parse_prompt("a b", syntax=upper) == [("A B", 1.0)]
    assert "upper" in syntax_names()


def test_unregistered_syntax_is_gone_everywhere(conditioner) -> None:
    register_syntax(Syntax("upper", _upper))
    unregister_syntax("upper")
    message = r"^syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got 'upper'$"
    with pytest.raises(PromptError, match=message):
        conditioner.encode("a cat", syntax="upper")
    with pytest.raises(PromptError, match=message):
        parse("a cat", "upper")
    with pytest.raises(PromptError, match=message):
        inspection.check_options("upper")


def test_registry_refuses_duplicates_and_builtin_removal(upper) -> None:
    with pytest.raises(PromptError, match=r"^syntax 'upper': already registered; pass replace=True to replace it$"):
        register_syntax(Syntax("upper", _upper))
    register_syntax(Syntax("upper", _upper, weighting="multiply"), replace=True)
    assert get_syntax("upper").weighting == "multiply"
    with pytest.raises(PromptError, match=r"^syntax 'plain': built in, cannot be unregistered$"):
        unregister_syntax("plain")
    with pytest.raises(PromptError, match=r"^syntax: expected a sdclip.prompts.parsed.Syntax with a name, got 'x'$"):
        register_syntax("x")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 3, ["plain"], "Plain"])
def test_syntax_check_is_one_message_for_any_value(bad) -> None:
    with pytest.raises(PromptError, match=r"^syntax: expected one of 'plain', 'a1111', 'comfy', 'compel', got "):
        get_syntax(bad)


def test_builtin_entries() -> None:
    assert syntax_names()[:3] == ("plain", "a1111", "comfy")
    assert [get_syntax(n).weighting for n in ("plain", "a1111", "comfy")] == [None, "a1111", "comfy"]
    assert [get_syntax(n).embedding_prefix for n in ("plain", "a1111", "comfy")] == [False, False, True]


def test_cli_syntax_choices_come_from_the_table() -> None:
    from sdclip.cli.app import build_parser  # noqa: PLC0415

    with pytest.raises(SystemExit):
        build_parser().parse_args(["tokens", "a", "--syntax", "webui"])
    assert build_parser().parse_args(["tokens", "a", "--syntax", "comfy"]).syntax == "comfy"


def test_prompts_package_imports_no_torch() -> None:
    code = (
        "import sys, importlib, pkgutil, sdclip.prompts as p\n"
        "names = [m.name for m in pkgutil.iter_modules(p.__path__)]\n"
        "for n in names: importlib.import_module('sdclip.prompts.' + n)\n"
        "from sdclip.prompts.syntaxes import syntax_names; syntax_names()\n"
        "from sdclip.prompts.tokens import tokenize_prompt\n"
        "from sdclip.models.tokenizer import load_tokenizer\n"
        "tokenize_prompt('a (cat:1.5) BREAK b', load_tokenizer(), syntax='a1111', truncate=False)\n"
        "assert len(names) >= 9, names\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
