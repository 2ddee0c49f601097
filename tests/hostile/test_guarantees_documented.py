"""The issue's "Keep it fixed" part: the README has a "Guarantees" section that states what sdclip
promises, each decision this suite asserts included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

# topic -> words that must all appear in the section (lower case)
TOPICS = {
    "outputs written atomically, nothing left behind": ["atomic", ".tmp"],
    "an existing --out is not overwritten without --resume/--overwrite": ["--overwrite"],
    "locking of --out": ["lock"],
    "resume: no row lost or doubled, keyed by the resolved path": ["resolved", "resume"],
    "thread safety of TextConditioner and ClipScorer": ["thread"],
    "pickles: refused unless allowed, then weights_only": ["pickle", "--allow-pickle", "weights_only"],
    "paths in pairs files: '..' and absolute paths": ["absolute", ".."],
    "finite tensors or an error; JSON always valid": ["finite", "json"],
    "EXIF orientation: the default and the option": ["exif"],
    "errors: one line, exit code 2, never a traceback": ["exit code 2", "traceback"],
}


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Guarantees\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, "README.md has no '## Guarantees' section"
    return match.group(1).lower()


@pytest.mark.parametrize("topic", list(TOPICS))
def test_the_readme_states_the_guarantee(topic):
    section = _section()
    words = TOPICS[topic]
    missing = [word for word in words if word not in section]
    assert not missing, f"the Guarantees section does not cover: {topic} (missing {missing})"
