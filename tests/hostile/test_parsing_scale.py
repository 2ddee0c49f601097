"""Item 6: parsing is linear in the prompt's length: a 1 MB prompt parses in under a second.

Decision: ``parse_prompt`` runs in time linear in the text for both syntaxes. Nesting deeper than a
documented bound may instead be refused up front with a ``PromptError`` (also within the second).

Each prompt is parsed in its own child process (``sdclip.prompts.parser`` imports no torch, so it starts
in a fraction of a second), one child per core at a time. What is asserted is the work the child did,
its CPU time (``time.process_time``), not wall-clock time, so a busy machine does not fail the test
(CPU time still grows when more children than cores share them: the CI run that had all nine at once
on two cores measured 1.23 s for a parse that takes 0.6-0.8 s alone). A child still running after
``WALL_LIMIT`` seconds is killed and fails its case: quadratic parsing (100k spaces took 588 s) must
not hold up the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from ._support import child_env

CPU_LIMIT = 1.0  # seconds of CPU for one parse, as the issue asks for a 1 MB prompt
WALL_LIMIT = 25.0  # seconds before a child is killed
MB = 1_000_000

CASES = {
    # name: (syntax, python expression building the prompt)
    "a1111-10k-spaces": ("a1111", "'a' + ' ' * 10_000 + 'b'"),  # issue: 2.8 s (20k: 11 s, 100k: 588 s)
    "a1111-1MB-spaces": ("a1111", f"'a' + ' ' * {MB} + 'b'"),
    "a1111-1MB-spaces-between-brackets": ("a1111", f"'(a' + ' ' * {MB} + 'b:1.2) c'"),
    "comfy-1MB-spaces": ("comfy", f"'a' + ' ' * {MB} + 'b'"),
    "comfy-10k-nesting": ("comfy", "'(' * 10_000 + 'x' + ')' * 10_000"),  # issue: 15-27 s
    "comfy-1MB-nesting": ("comfy", f"'(' * {MB // 2} + 'x' + ')' * {MB // 2}"),
    "a1111-1MB-nesting": ("a1111", f"'(' * {MB // 2} + 'x' + ')' * {MB // 2}"),
    "comfy-1MB-of-weighted-words": ("comfy", f"'(word:1.1) ' * {MB // 11}"),
    "a1111-1MB-of-weighted-words": ("a1111", f"'(word:1.1) [more] ' * {MB // 19}"),
}

_CHILD = r"""
import json, sys, time
syntax, expression = sys.argv[1], sys.argv[2]
text = eval(expression)
from sdclip.errors import PromptError
from sdclip.prompts.parser import parse_prompt
parse_prompt("a", syntax)  # the syntax module loads on first use: not part of parsing the big prompt
times = []
for _ in range(3):  # the best of three parses: CPU time still varies with what the other cores do
    start = time.process_time()
    try:
        runs = parse_prompt(text, syntax)
        outcome = f"{len(runs)} runs"
    except PromptError as error:
        outcome = f"PromptError: {error}"
    times.append(time.process_time() - start)
print(json.dumps({"cpu": min(times), "outcome": outcome, "chars": len(text)}))
"""


def _parse_in_child(syntax: str, expression: str) -> dict:
    """One case in its own child: {"cpu", "outcome", "chars"}, or {"killed"} / {"crashed"}."""
    try:
        child = subprocess.run([sys.executable, "-c", _CHILD, syntax, expression], capture_output=True, text=True,
                               env=child_env(), timeout=WALL_LIMIT)
    except subprocess.TimeoutExpired:
        return {"killed": True}
    return json.loads(child.stdout) if child.returncode == 0 else {"crashed": child.stderr[-2000:]}


@pytest.fixture(scope="module")
def parse_results() -> dict[str, dict]:
    """Every case parsed in its own child, as many at once as there are cores: name -> result."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {name: pool.submit(_parse_in_child, *case) for name, case in CASES.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_huge_prompt_parses_in_linear_time(parse_results, name):
    """Issue: the a1111 parser is quadratic in runs of spaces; comfy takes 15-27 s for 10k nesting levels."""
    result = parse_results[name]
    assert "killed" not in result, f"{name}: still parsing after {WALL_LIMIT:.0f} s (killed): not linear"
    assert "crashed" not in result, f"{name}: the parser crashed:\n{result.get('crashed')}"
    assert result["cpu"] < CPU_LIMIT, f"{name}: {result['cpu']:.2f} s of CPU for {result['chars']:,} characters"
    if result["outcome"].startswith("PromptError"):
        assert "nest" in result["outcome"].lower() or "long" in result["outcome"].lower(), result["outcome"]
