"""Part files: processes simulated in turn (a barrier is a no-op then), killed mid-run, resumed on another count.

The reference is an independent pure function of each pair (``expected``), not the engine's own output.
"""

from __future__ import annotations

import os

import pytest

from sdclip.errors import ScoreFileError
from sdclip.scoring.parts import merge_parts, score_in_parts, stale_parts_message
from sdclip.scoring.score_files import ScoreRow, read_score_file
from sdclip.scoring.shards import Processes, existing_parts, part_path

from _group import Group  # tests/scoring is on sys.path (no __init__.py)

PAIRS = [(f"img{i:02d}.png", "a cat" if i % 3 else "a dog") for i in range(23)]


def expected(pair):
    image, prompt = pair
    return ScoreRow(image, prompt, float(int(image[3:5]) * 1.5 + len(prompt)))


def key(pair):
    return pair


def row_key(row):
    return row.image, row.prompt


class Killed(Exception):
    pass


def scorer(batch=4, *, die_after=None, log=None):
    """row_batches: scores in batches of ``batch``; raises after ``die_after`` batches (a SIGKILL mid-run)."""
    def row_batches(todo):
        for number, start in enumerate(range(0, len(todo), batch)):
            if die_after is not None and number == die_after:
                raise Killed
            rows = [expected(pair) for pair in todo[start : start + batch]]
            if log is not None:
                log.extend(row.image for row in rows)
            yield rows
    return row_batches


def run(out, world, *, resume=False, die=None, log=None):
    """Every rank of ``world`` in its own thread; ``die``: {rank: batches before it is killed}.

    A killed rank stops the others at their next barrier, as a launcher stops a job.
    """
    def rank_main(rank, barrier):
        return score_in_parts(out, PAIRS, pair_key=key, row_key=row_key, resume=resume,
                              processes=Processes(rank, world, None, barrier),
                              row_batches=scorer(die_after=(die or {}).get(rank), log=log))

    results = Group(world).run(rank_main, Killed)
    assert all(results.get(rank) is None for rank in range(1, world))
    return results.get(0)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_merged_parts_equal_one_pass_in_input_order(tmp_path, world):
    rows = run(tmp_path / "s.csv", world)
    assert rows == [expected(pair) for pair in PAIRS]


def test_killed_processes_resume_on_another_count_with_nothing_lost_or_doubled(tmp_path):
    out = tmp_path / "s.jsonl"
    first: list[str] = []
    run(out, 3, die={0: 1, 2: 0}, log=first)  # rank 2 dies at once, rank 0 after one batch
    assert len(existing_parts(out)) == 3 and not out.exists()
    assert 0 < len(first) < len(PAIRS)
    flushed = sum(len(read_score_file(p)) for p in existing_parts(out) if os.path.getsize(p) > 30)
    assert flushed == len(first)  # every row scored before the kill was flushed
    second: list[str] = []
    rows = run(out, 2, resume=True, log=second)
    assert rows == [expected(pair) for pair in PAIRS]
    assert sorted(first + second) == sorted(image for image, _ in PAIRS)  # each pair scored exactly once


def test_error_rows_are_retried_and_the_success_wins(tmp_path):
    out = tmp_path / "s.csv"
    part_path(out, 0, 1).write_text("image,prompt,score,rank,error\nimg00.png,a dog,,,bad file\n")
    rows = run(out, 2, resume=True)
    assert rows == [expected(pair) for pair in PAIRS]


def test_a_half_written_last_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "s.csv"
    part = part_path(out, 0, 2)
    part.write_text("image,prompt,score,rank,error\nimg00.png,a dog,5.0,,\nimg01.p")
    rows = run(out, 2, resume=True)
    assert rows == [expected(PAIRS[0]).__class__("img00.png", "a dog", 5.0)] + [expected(p) for p in PAIRS[1:]]


def test_a_fresh_run_ignores_parts_of_another_process_count(tmp_path):
    out = tmp_path / "s.csv"
    part_path(out, 0, 3).write_text("image,prompt,score,rank,error\nimg00.png,a dog,999.0,,\n")
    assert run(out, 2) == [expected(pair) for pair in PAIRS]
    assert not part_path(out, 0, 3).exists()


def test_merge_names_the_missing_pairs_and_how_to_resume(tmp_path):
    out = tmp_path / "s.csv"
    part_path(out, 0, 1).write_text("image,prompt,score,rank,error\nimg00.png,a dog,1.0,,\n")
    with pytest.raises(ScoreFileError, match=r"--out '.*s.csv': 22 of 23 pairs have no row in the part files "
                                             r"\(first: \('img01.png', 'a cat'\)\); a process stopped early: run "
                                             r"the same command with --resume"):
        merge_parts(out, PAIRS, pair_key=key, row_key=row_key)


def test_stale_parts_message_says_resume_or_overwrite(tmp_path):
    out = tmp_path / "s.csv"
    part_path(out, 1, 4).write_text("")
    assert stale_parts_message(out) == (
        f"--out '{out}': part files of an unfinished run are next to it (s.part-00001-of-00004.csv); pass --resume "
        "to finish it (with any number of processes), or --overwrite to start again")
