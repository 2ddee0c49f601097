"""Embedding folders: parts from simulated processes (threads with a real barrier), killed and resumed on
another count; the one-call loader; re-scoring from stored rows against a float64 recomputation."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from sdclip.errors import SdclipError
from sdclip.scoring.embed_parts import embed_in_parts, parts_folder
from sdclip.scoring.embeddings import MANIFEST, cosine_scores, load_embeddings, rescore, shard_paths
from sdclip.scoring.shards import Processes

from _group import Group  # tests/scoring is on sys.path (no __init__.py)

DIM = 8
ITEMS = [(f"img{i:02d}.png", f"prompt {i % 4}") for i in range(19)]


def vector(text: str) -> np.ndarray:
    """An independent, deterministic embedding of a string (the reference)."""
    values = np.random.RandomState(sum(map(ord, text)) * 7 + len(text)).randn(DIM)
    return values / np.linalg.norm(values)


class Killed(Exception):
    pass


def batches(die_after=None, log=None, batch=3):
    def run(todo):
        for number, start in enumerate(range(0, len(todo), batch)):
            if die_after is not None and number == die_after:
                raise Killed
            chunk = todo[start : start + batch]
            if log is not None:
                log.extend(image for image, _ in chunk)
            yield (chunk, np.stack([vector(i) for i, _ in chunk]), np.stack([vector(p) for _, p in chunk]),
                   ["" for _ in chunk])
    return run


def run(folder, world, *, resume=False, die=None, log=None, shard_size=5):
    def rank_main(rank, barrier):
        return embed_in_parts(folder, ITEMS, item_key=tuple, dim=DIM, manifest={"model": "test"}, resume=resume,
                              shard_size=shard_size, processes=Processes(rank, world, None, barrier),
                              batches=batches((die or {}).get(rank), log))

    return Group(world).run(rank_main, Killed).get(0)


def check(folder):
    loaded = load_embeddings(folder)
    assert loaded.images == [image for image, _ in ITEMS] and loaded.prompts == [p for _, p in ITEMS]
    assert loaded.image.dtype == np.float16 and loaded.text.dtype == np.float16
    np.testing.assert_allclose(loaded.image, np.stack([vector(i) for i, _ in ITEMS]), atol=1e-3)  # float16
    np.testing.assert_allclose(loaded.text, np.stack([vector(p) for _, p in ITEMS]), atol=1e-3)
    assert loaded.manifest["rows"] == len(ITEMS) and loaded.manifest["shards"] == 4  # 19 rows, 5 a shard
    table = pq.read_table(shard_paths(folder, 3)["metadata"])
    assert table.column_names == ["image_path", "prompt", "shard", "row", "error"]
    assert table.column("row").to_pylist() == [0, 1, 2, 3] and set(table.column("shard").to_pylist()) == {3}
    assert not parts_folder(folder).exists()


@pytest.mark.parametrize("world", [1, 3])
def test_parts_merge_into_shards_in_input_order(tmp_path, world):
    manifest = run(tmp_path / "emb", world)
    assert manifest["dim"] == DIM and manifest["model"] == "test"
    check(tmp_path / "emb")


def test_killed_processes_resume_on_another_count_each_image_embedded_once(tmp_path):
    folder = tmp_path / "emb"
    first, second = [], []
    assert run(folder, 2, die={1: 1}, log=first) is None  # rank 1 dies after one batch
    assert not (folder / MANIFEST).exists() and 0 < len(first) < len(ITEMS)
    run(folder, 3, resume=True, log=second)
    assert sorted(first + second) == sorted(image for image, _ in ITEMS)
    check(folder)


def test_loader_refuses_an_unfinished_folder(tmp_path):
    run(tmp_path / "emb", 2, die={0: 0})
    with pytest.raises(SdclipError, match=r"embeddings '.*emb': no sdclip-embeddings.json; expected a folder "
                                          r"`sdclip embed` finished \(resume an unfinished one with "):
        load_embeddings(tmp_path / "emb")


def test_loader_names_a_folder_whose_rows_disagree(tmp_path):
    run(tmp_path / "emb", 1)
    manifest = json.loads((tmp_path / "emb" / MANIFEST).read_text())
    np.save(shard_paths(tmp_path / "emb", 0)["image"], np.zeros((2, DIM), np.float16))
    assert manifest["shards"] == 4
    with pytest.raises(SdclipError, match=r"embeddings '.*emb': 16 embedding rows but 19 metadata rows; expected one "
                                          r"each \(write the folder again with --overwrite\)"):
        load_embeddings(tmp_path / "emb")


def test_rescore_equals_a_float64_cosine(tmp_path):
    run(tmp_path / "emb", 1)
    loaded = load_embeddings(tmp_path / "emb")
    pairs = [("img03.png", "a"), ("missing.png", "b"), ("img10.png", "b")]
    text = {"a": np.arange(1.0, DIM + 1), "b": -np.ones(DIM)}
    rows = rescore(loaded, pairs, lambda prompts: np.stack([text[p] for p in prompts]), key=str)
    for (image, prompt, score, error), pair in zip(rows, pairs):
        if image == "missing.png":
            assert (score, error) == (None, "image 'missing.png': not in the embeddings folder")
            continue
        ref = vector(image).astype(np.float64) @ text[prompt] / np.linalg.norm(text[prompt]) * 100
        assert error == "" and abs(score - ref) < 0.1  # float16 storage: ~5e-4 per component


def test_cosine_scores_chunks_agree_with_one_product():
    rs = np.random.RandomState(0)
    image, text = rs.randn(50, DIM).astype(np.float16), rs.randn(3, DIM)
    whole = cosine_scores(image, text, pairs=False)
    np.testing.assert_allclose(cosine_scores(image, text, pairs=False, chunk=7), whole, rtol=1e-6)
    ref = 100 * (image / np.linalg.norm(image.astype(np.float64), axis=1, keepdims=True)) @ \
        (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    np.testing.assert_allclose(whole, ref, atol=1e-3)
