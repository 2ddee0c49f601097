"""Sharding: contiguous, deterministic shares that cover every item once; part names and discovery."""

from __future__ import annotations

import pytest

from sdclip.scoring.shards import Processes, current_processes, existing_parts, part_path, shard_range


@pytest.mark.parametrize("total", [0, 1, 5, 7, 64, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_item_once_in_order(total, world):
    shards = [list(shard_range(total, rank, world)) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(total))  # contiguous, in rank order
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1  # no padding, balanced


def test_shard_range_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 of world 2: expected 0 <= rank < world"):
        shard_range(10, 2, 2)


def test_part_files_keep_the_output_format_and_are_found_sorted(tmp_path):
    out = tmp_path / "scores.jsonl"
    for world, rank in [(3, 2), (2, 1), (3, 0), (2, 0)]:
        part_path(out, rank, world).write_text("")
    (tmp_path / "scores.part-00000-of-00002.csv").write_text("")  # another output's part
    (tmp_path / "other.part-00000-of-00002.jsonl").write_text("")
    assert part_path(out, 2, 3).name == "scores.part-00002-of-00003.jsonl"
    assert [p.name for p in existing_parts(out)] == [
        "scores.part-00000-of-00002.jsonl", "scores.part-00001-of-00002.jsonl",
        "scores.part-00000-of-00003.jsonl", "scores.part-00002-of-00003.jsonl"]


def test_not_launched_is_one_process_without_a_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_processes() == Processes(0, 1, None)
