"""Every data layout gives the same pairs; bad images are skipped and counted; the split and batches are seeded."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from PIL import Image

from sdclip.errors import TrainingDataError
from sdclip.models.tokenizer import load_tokenizer
from sdclip.scoring.preprocess import PreprocessConfig
from sdclip.training import load_pairs
from sdclip.training.batches import Collator, epoch_batches, split_pairs

CAPTIONS = ["a red circle", "a blue star", "a green square"]
COLOURS = ["red", "blue", "green"]


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _layouts(tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for n, (caption, colour) in enumerate(zip(CAPTIONS, COLOURS)):
        (folder / "sub" / f"{n}.png").write_bytes(_png(colour))
        (folder / "sub" / f"{n}.txt").write_text(caption + "\n")
    (folder / "sub" / "orphan.png").write_bytes(_png("white"))  # no caption: skipped and counted
    rows = [{"image": f"folder/sub/{n}.png", "caption": c, "label": COLOURS[n]} for n, c in enumerate(CAPTIONS)]
    with open(tmp_path / "pairs.csv", "w") as handle:
        handle.write("image,caption,label\n" + "".join(f"{r['image']},{r['caption']},{r['label']}\n" for r in rows))
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"filepath": r["image"], "text": r["caption"],
                                                              "label": r["label"]}) + "\n" for r in rows))  # fmt: skip
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for n, (caption, colour) in enumerate(zip(CAPTIONS, COLOURS)):
            key = f"shard/{n:05d}.v1" if n == 1 else f"{n:05d}"  # a key with a folder; extensions with two dots
            members = {f"{key}.png": _png(colour), f"{key}.json": json.dumps({"caption": caption,
                                                                             "label": colour}).encode()}
            for name, payload in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    memory = [(Image.new("RGB", (12, 10), c), caption, c) for c, caption in zip(COLOURS, CAPTIONS)]
    return {"memory": memory, "folder": folder, "csv": tmp_path / "pairs.csv", "jsonl": tmp_path / "pairs.jsonl",
            "tar": tmp_path / "shard-000.tar"}  # fmt: skip


@pytest.mark.parametrize("layout", ["memory", "folder", "csv", "jsonl", "tar"])
def test_every_layout_reads_the_same_pairs(tmp_path, layout):
    pairs = load_pairs(_layouts(tmp_path)[layout])
    assert [pairs.caption(i) for i in range(len(pairs))] == CAPTIONS
    assert [pairs.open_image(i).getpixel((0, 0)) for i in range(3)] == [(255, 0, 0), (0, 0, 255), (0, 128, 0)]
    assert [pairs.label(i) for i in range(3)] == (COLOURS if layout != "folder" else [None] * 3)
    assert pairs.skipped == ({"no caption": 1} if layout == "folder" else {})


def test_a_list_of_sources_is_concatenated_and_bad_images_are_counted(tmp_path):
    layouts = _layouts(tmp_path)
    (tmp_path / "folder" / "sub" / "1.png").write_bytes(b"not a png")
    pairs = load_pairs([layouts["csv"], layouts["tar"]])
    assert len(pairs) == 6
    batch = Collator(pairs, load_tokenizer(), PreprocessConfig(shortest_edge=8, crop=(8, 8)), max_length=77)(range(6))
    assert batch.bad == 1 and batch.indices == [0, 2, 3, 4, 5] and batch.pixel_values.shape == (5, 3, 8, 8)
    assert batch.labels == ["red", "green", "red", "blue", "green"]


@pytest.mark.parametrize(("data", "message"), [
    ("missing.csv", r"data '.*missing.csv': no such file or folder"),
    ("pairs.txt", r"data '.*pairs.txt': unknown format '.txt'; expected a folder, .csv, .tsv, .jsonl or .tar"),
    ("bad.csv", r"data '.*bad.csv': columns \['name', 'words'\] lack an image column"),
    ("bad.jsonl", r"data '.*bad.jsonl': line 2 is not JSON"),
    ("empty", r"data '.*empty': no \(image, caption\) pairs found"),
    ("broken.tar", r"data '.*broken.tar': not a readable tar file"),
])  # fmt: skip
def test_unreadable_data_is_one_line_error(tmp_path, data, message):
    (tmp_path / "pairs.txt").write_text("x")
    (tmp_path / "bad.csv").write_text("name,words\na,b\n")
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{oops\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.tar").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TrainingDataError, match=message):
        load_pairs(tmp_path / data)


def test_in_memory_items_must_be_pairs():
    message = r"data\[1\]: expected an \(image, caption\) or \(image, caption, label\)"
    with pytest.raises(TrainingDataError, match=message):
        load_pairs([(Image.new("RGB", (2, 2)), "ok"), ("just a caption",)])


def test_split_and_batches_are_seeded_and_independent_of_the_process_count():
    pairs = load_pairs([(Image.new("RGB", (2, 2)), str(i)) for i in range(40)])
    train, val = split_pairs(pairs, 0.25, seed=3)
    again_train, _ = split_pairs(pairs, 0.25, seed=3)
    assert len(val) == 10 and [train.caption(i) for i in range(30)] == [again_train.caption(i) for i in range(30)]
    assert not {train.caption(i) for i in range(30)} & {val.caption(i) for i in range(10)}
    one = epoch_batches(30, 8, epoch=1, seed=0)
    two = [epoch_batches(30, 4, epoch=1, seed=0, world_size=2, rank=r) for r in (0, 1)]
    assert len(one) == 3 and all(len(b) == 8 for b in one)  # the incomplete last batch is dropped
    assert [a + b for a, b in zip(*two)] == one
    assert epoch_batches(30, 8, epoch=2, seed=0) != one


def test_group_size_one_is_the_plain_permutation_and_groups_stay_whole():
    import torch

    plain = torch.randperm(30, generator=torch.Generator().manual_seed(0 + 1)).tolist()
    assert epoch_batches(30, 8, epoch=1, seed=0, group_size=1) == [plain[i:i + 8] for i in (0, 8, 16)]
    for epoch in range(4):
        one = epoch_batches(31, 8, epoch=epoch, seed=5, group_size=4)  # 7 whole groups and a group of 3
        assert sorted(len(b) for b in one) == [8, 8, 8]
        for batch in one:
            assert {i // 4 for i in batch} == {batch[k] // 4 for k in range(0, 8, 4)}  # two whole groups of 4
            assert all(batch[k:k + 4] == list(range(batch[k], batch[k] + 4)) for k in (0, 4))
        assert 28 not in {i for b in one for i in b}  # the short last group is last, in the dropped tail
        two = [epoch_batches(31, 4, epoch=epoch, seed=5, world_size=2, rank=r, group_size=4) for r in (0, 1)]
        assert [a + b for a, b in zip(*two)] == one
    orders = {tuple(b[0] for b in epoch_batches(32, 8, epoch=e, seed=5, group_size=2)) for e in range(4)}
    assert len(orders) == 4  # still shuffled from epoch to epoch


def test_split_keeps_groups_on_one_side():
    pairs = load_pairs([(Image.new("RGB", (2, 2)), f"scene {i // 3}") for i in range(30)])
    train, val = split_pairs(pairs, 0.2, seed=1, group_size=3)
    assert (len(train), len(val)) == (24, 6)
    assert not {train.caption(i) for i in range(24)} & {val.caption(i) for i in range(6)}
