"""The compel syntax's parser against compel's own PromptParser (the ``compel`` package, test extra).

Every prompt of the corpus (well-formed prompts with every construct, generated nestings, and the edge
cases compel reads in its own way) must give the same parts, runs, weights and blend options.
"""

from __future__ import annotations

import random

import pytest

from sdclip.errors import PromptError
from sdclip.prompts.compel import parse_compel
from sdclip.prompts.parsed import Blend, Break, Run
from sdclip.prompts.parser import parse

prompt_parser = pytest.importorskip("compel.prompt_parser")
prompt_parser.pp.ParserElement.enable_packrat()  # memoizes compel's pyparsing grammar: same results, ~8x faster
_COMPEL = prompt_parser.PromptParser()

WELL_FORMED = [
    "a cat", "a cat++", "a cat+++ on a mat", "a cat-- on a mat", "a cat--- sitting", "(a red cat)1.3",
    "(a red cat)0.5 on a mat", "(a red cat)++ and a dog-", '"a red cat"1.2 and "a blue dog"0.8',
    '"a red cat"++', "(a (red)1.5 cat)1.2", "((a cat)1.1 on a mat)0.9", "(a cat).attend(1.4)",
    "(cat).attend(+++)", "(cat).attend(--)", "a photo, (masterpiece)1.2, best quality--", "a cat,dog,fish",
    '("a cat", "a dog").blend(0.7, 0.3)', '("a cat", "a dog").blend(1, 1)', '("a cat++", "a dog--").blend(0.5, 0.5)',
    '("a cat", "a dog", "a bird").blend(0.2, 0.3, 0.5)', '("a cat", "a dog").blend(0.7, 0.3, no_normalize)',
    '("a cat", "a dog").blend(1.5, 0.5, no_normalize)', '(cat, dog).blend(0.6, 0.4)',
    '("a cat", "a dog").and()', '("a cat", "a dog").and(1, 0.5)', '("a cat++", "oil painting").and()',
    '("a cat", "a dog", "a bird").and(1.0, 0.8, 1.2)', '("a (red)1.3 cat", "snow").add()', "(cat, dog).and()",
    "a \\(literal\\) paren", 'a \\"quote\\" here', "half-life 3 poster", "a cat0.5", "(a cat)2",
    "(a cat).5", "a cat++ dog++", "a cat+ + dog", "a+ b- c++ d--", "", "   ", "a  cat   on  mat",
    "(a cat)-0.5", "x \"\" y", "(a.b)", "a.b", "cat1.2", "(a)(b)", "(a)+(b)-", "a-", "(a (b)1.2, c)-",
    "portrait of a woman, (freckles)1.2, (red hair)1.3, (blue eyes)0.8, soft light, 35mm",
    "a cat (on a mat)0.0", "a cat (on a mat)0.2", "(a cat)1.0 dog", "a (cat)1.1 (dog)1.1",
    '"a big, fluffy cat"-- in snow', "(a, b, c)++", "a (b (c (d)1.1)1.1)1.1", "a\nnew line cat++",
    "tabs\tand cat++", '("a", "b").blend()', "(a, \"b c\")1.2",
]


def random_prompts(count, seed):
    rng = random.Random(seed)
    words = ["a", "cat", "red dog", "mat", "snow,", "sky.", "x1", "half-life"]

    def node(depth):
        kind = rng.choice(["w", "w", "w", "plus", "minus", "num", "q", "paren"] if depth < 3 else ["w"])
        if kind == "w":
            return rng.choice(words)
        if kind == "plus":
            return rng.choice(words).split()[0].strip(",.") + "+" * rng.randint(1, 3)
        if kind == "minus":
            return rng.choice(words).split()[0].strip(",.") + "-" * rng.randint(1, 3)
        inner = " ".join(node(depth + 1) for _ in range(rng.randint(1, 3)))
        if kind == "num":
            return f"({inner}){rng.choice(['1.3', '0.7', '2', '.5', '0.0', '1.05'])}"
        if kind == "q":
            return f'"{inner}"' + rng.choice(["", "++", "-", "1.2"])
        return f"({inner})" + rng.choice(["", "+", "--", "0.9"])

    out = []
    for _ in range(count):
        body = lambda: " ".join(node(0) for _ in range(rng.randint(1, 4)))
        r = rng.random()
        if r < 0.15:
            out.append(f'("{body()}", "{body()}").blend({rng.choice(["0.3, 0.7", "1, 1", "2, 1, no_normalize"])})')
        elif r < 0.3:
            out.append(f'("{body()}", "{body()}").and({rng.choice(["", "1, 0.6", "0.8, 1.2"])})')
        else:
            out.append(body())
    return out


EDGE_CASES = [  # malformed or odd syntax: compel reads these in its own ways, and so does sdclip
    '("a", b c).blend(1,2)', "(a, b).and() extra", "a (b + c)", '"a=b"', "(a=b)", 'a "b c', "(cat) .attend(2)",
    "(cat)1.3e2", "a\\,b", '("", "a").and()', "(unclosed paren a cat", "a cat++, dog", '"nested "quote"" x',
]
CORPUS = WELL_FORMED + EDGE_CASES
GENERATED = random_prompts(150, 3)


def compel_parts(text):
    """compel's parse, as ([runs | ("blend", parts, weights, normalize)], conjunction weights)."""
    conjunction = _COMPEL.parse_conjunction(text)
    parts = []
    for part in conjunction.prompts:
        if isinstance(part, prompt_parser.Blend):
            subs = tuple(tuple((f.text, f.weight) for f in sub.children) for sub in part.prompts)
            parts.append(("blend", subs, tuple(float(w) for w in part.weights), part.normalize_weights))
        else:
            parts.append(tuple((f.text, f.weight) for f in part.children))
    return parts, tuple(float(w) for w in conjunction.weights)


def sdclip_parts(text):
    combined = parse_compel(text)
    parts = []
    for part in combined.parts:
        if isinstance(part, Blend):
            subs = tuple(tuple((r.text, r.weight) for r in sub.items) for sub in part.parts)
            parts.append(("blend", subs, part.weights, part.normalize))
        else:
            parts.append(tuple((r.text, r.weight) for r in part.items))
    return parts, combined.weights


def test_corpus_matches_compel():
    assert len(CORPUS) > 70
    constructs = {"++": 0, "--": 0, ").blend(": 0, ").and(": 0, "no_normalize": 0, ".attend(": 0, "\\(": 0}
    for text in CORPUS:
        assert sdclip_parts(text) == compel_parts(text), text
        for construct in constructs:
            constructs[construct] += construct in text
    assert all(constructs.values()), constructs  # every construct is in the corpus


@pytest.mark.slow  # compel's pyparsing grammar takes ~50 ms a prompt here
def test_generated_prompts_match_compel():
    for text in GENERATED:
        assert sdclip_parts(text) == compel_parts(text), text


@pytest.mark.parametrize(("text", "message"), [
    ('("a cat", "a dog").blend(0.7)', r"^prompt '\(\"a cat\", \"a dog\"\)\.blend\(0\.7\)': \.blend\(\) has 2 prompts but 1 weights$"),
    ('("a", "b").blend(1, 1) more', r"^prompt .*: text after \.blend\(\.\.\.\); compel takes a blend only as the whole prompt$"),
    ("(a).swap(b)", r"^prompt '\(a\)\.swap\(b\)': \.swap\(\) is cross-attention control, not conditioning; sdclip does"),
    ("withLora(x, 0.5) a cat", r"^prompt 'withLora\(x, 0\.5\) a cat': withLora\(\)/useLora\(\) load LoRAs, which sdclip"),
    ('("a", "b").and(1, 2, 3)', r"^prompt .*: \.and\(\) has 2 prompts but 3 weights$"),
    ('("a", "b").blend(w=1)', r"^prompt .*: \.blend\(\) takes numbers \(and no_normalize\), not w=\.\.\.$"),
])  # fmt: skip
def test_refused(text, message):
    with pytest.raises(PromptError, match=message):
        parse_compel(text)


def test_syntax_entry_shows_parts_with_breaks():
    items = parse('("a cat++", "a dog").and()', "compel").items
    assert items == (Run("a", 1.0), Run("cat", 1.1 * 1.1), Break(), Run("a dog", 1.0))
    assert parse('("a cat", "a dog").blend(0.5, 0.5)', "compel").items == (Run("a cat", 1.0),)


def test_any_text_parses_or_raises_prompt_error():
    rng = random.Random(5)
    alphabet = 'ab c,.()"+-=\\\t\x0c\n01.5|[]:'
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        try:
            combined = parse_compel(text)
        except PromptError:
            continue
        assert combined.parts and len(combined.parts) == len(combined.weights), text
