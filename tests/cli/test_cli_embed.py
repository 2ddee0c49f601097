"""``sdclip embed`` and ``sdclip score --embeddings``: stored rows score as the vision tower does (float16
tolerance), one-line refusals, a 2-process run equal to a single-process one, and a SIGKILLed rank resumed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from sdclip.cli import main
from sdclip.scoring.embeddings import load_embeddings

from _launch import env, pairs_file, sigkill_mid_share, torchrun, whole_lines  # tests/cli: on sys.path


def scores(path):
    return {(row["image"], row["prompt"]): float(row["score"]) for row in csv.DictReader(path.open())}


def test_embed_then_score_matches_scoring_directly(tiny_clip_folder, tmp_path, capsys):
    pairs = pairs_file(tmp_path / "data", 6)
    model = ["--model", str(tiny_clip_folder), "--device", "cpu"]
    assert main(["embed", "--pairs", str(pairs), "--out", str(tmp_path / "emb"), *model, "--shard-size", "4"]) == 0
    stored = load_embeddings(tmp_path / "emb")
    assert len(stored) == 6 and stored.manifest["shards"] == 2 and stored.text is not None
    assert main(["score", "--pairs", str(pairs), "--out", str(tmp_path / "direct.csv"), *model]) == 0
    assert main(["score", "--embeddings", str(tmp_path / "emb"), "--pairs", str(pairs), "--out",
                 str(tmp_path / "stored.csv"), *model]) == 0
    direct, stored_scores = scores(tmp_path / "direct.csv"), scores(tmp_path / "stored.csv")
    assert direct.keys() == stored_scores.keys()
    assert max(abs(direct[k] - stored_scores[k]) for k in direct) < 0.1  # float16 rows: ~1e-3 of the cosine
    # the text rows are the prompts' features: their dot with the image rows is the same score
    again = 100 * np.einsum("nd,nd->n", stored.image.astype(np.float32), stored.text.astype(np.float32))
    assert np.allclose(again, [direct[(i, p)] for i, p in zip(stored.images, stored.prompts)], atol=0.1)
    capsys.readouterr()
    assert main(["embed", "--pairs", str(pairs), "--out", str(tmp_path / "emb"), *model]) == 2
    assert f"--out '{tmp_path / 'emb'}': holds finished embeddings (sdclip-embeddings.json); pass --overwrite" \
        in capsys.readouterr().err


def test_score_embeddings_refuses_another_models_width(tiny_clip_folder, tmp_path, capsys):
    from sdclip.scoring.embed_parts import embed_in_parts
    from sdclip.scoring.shards import Processes

    items = [("a.png", None)]
    embed_in_parts(tmp_path / "emb", items, item_key=tuple, dim=8, processes=Processes(), manifest={"model": "other"},
                   batches=lambda todo: [(todo, np.ones((1, 8)), None, [""])])
    assert main(["score", "--embeddings", str(tmp_path / "emb"), "--prompt", "a", "--model", str(tiny_clip_folder),
                 "--device", "cpu"]) == 2
    assert (f"--embeddings '{tmp_path / 'emb'}': rows are 8 wide but --model '{tiny_clip_folder}' gives 96; expected "
            "the model that embedded them (other)") in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_two_process_embed_equals_one_process(tiny_clip_folder, tmp_path):
    pairs = pairs_file(tmp_path / "data", 7)
    model = ["--model", str(tiny_clip_folder), "--batch-size", "2"]
    assert main(["embed", "--pairs", str(pairs), "--out", str(tmp_path / "one"), *model, "--device", "cpu"]) == 0
    done = subprocess.run([sys.executable, "-m", "sdclip", "embed", "--pairs", str(pairs), "--out",
                           str(tmp_path / "two"), *model, "--processes", "2"],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = load_embeddings(tmp_path / "one"), load_embeddings(tmp_path / "two")
    assert one.metadata.equals(two.metadata)
    np.testing.assert_allclose(two.image.astype(np.float32), one.image.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(two.text.astype(np.float32), one.text.astype(np.float32), atol=2e-3)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_single_process_folder(tiny_clip_folder, tmp_path):
    """torchrun's rank 1 of 2 is SIGKILLed after its first committed batch; one process resumes the rest.

    The folder then equals a single-process run: the same metadata rows in the same order (each pair once),
    the embeddings within 1e-3 (float16 rows of fp32 features computed in other batches).
    """
    from sdclip.scoring.embed_parts import parts_folder
    from sdclip.scoring.embeddings import MANIFEST

    pairs = pairs_file(tmp_path / "data", 24, size=900)  # 12 big images per rank: the kill lands mid-share
    out = tmp_path / "run"
    command = ["-m", "sdclip", "embed", "--model", str(tiny_clip_folder), "--pairs", str(pairs), "--out", str(out),
               "--batch-size", "1"]
    job = subprocess.Popen(torchrun("--standalone", "--nproc_per_node", "2", *command, "--workers", "1"),
                           env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = [parts_folder(out) / f"part-{rank:05d}-of-00002.jsonl" for rank in (0, 1)]
    written = sigkill_mid_share(job, rank=1, committed=lambda: whole_lines(lines[1]), share=12)
    assert not (out / MANIFEST).exists()
    kept = [[json.loads(line) for line in path.read_text().splitlines()] for path in lines]
    assert len(kept[1]) == written  # the JSON lines are whole: each is one committed row
    rows = {(row["image"], row["prompt"]) for row in kept[0] + kept[1]}
    assert len(rows) == len(kept[0]) + written  # no pair in two parts
    already = len(rows)
    resumed = subprocess.run([sys.executable, *command, "--resume"], env=env(), capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # every committed row is kept and nothing else: no image embedded twice, none skipped
    assert f"{already} images already embedded, {24 - already} to go on 1 process(es)" in " ".join(
        resumed.stderr.split())
    assert not parts_folder(out).exists()
    assert main(["embed", "--pairs", str(pairs), "--out", str(tmp_path / "one"), "--model", str(tiny_clip_folder),
                 "--device", "cpu", "--batch-size", "2"]) == 0
    got, want = load_embeddings(out), load_embeddings(tmp_path / "one")
    assert got.metadata.equals(want.metadata)  # image_path, prompt, shard, row, error: same rows, same order
    assert got.images == [str(pairs.parent / f"img{index:02d}.png") for index in range(24)]
    assert got.image.dtype == np.float16 and got.image.shape == want.image.shape == (24, 96)
    np.testing.assert_allclose(got.image.astype(np.float32), want.image.astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(got.text.astype(np.float32), want.text.astype(np.float32), atol=1e-3)
