"""``sdclip score --metric ... --rank-by ...``: one column per metric equal to each metric's scorer on its own
(whose formulas have float64 tests in tests/scoring), ranks by the chosen metric, the per-metric summary,
``--resume`` with several metrics, the report, and one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdclip.cli import main
from sdclip.scoring import load_scorer
from sdclip.scoring.clip_scorer import ClipScorer
from sdclip.testing import random_openclip_state_dict

pytestmark = pytest.mark.slow  # end to end: three metrics' models loaded per run


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_clip_folder):
    folder = tmp_path_factory.mktemp("metrics-cli")
    rs = np.random.RandomState(4)
    (folder / "imgs").mkdir()
    paths = []
    for index in range(5):
        paths.append(folder / "imgs" / f"img{index}.png")
        Image.fromarray(rs.randint(0, 256, (64, 64 + 8 * index, 3), dtype=np.uint8)).save(paths[-1])
    generator = torch.Generator().manual_seed(3)
    save_file({"layers.0.weight": torch.randn(16, 96, generator=generator), "layers.0.bias": torch.zeros(16),
               "layers.2.weight": torch.randn(1, 16, generator=generator), "layers.2.bias": torch.zeros(1)},
              folder / "aesthetic.safetensors")
    save_file(random_openclip_state_dict(seed=5), folder / "hps.safetensors")
    expected = {
        "clip": ClipScorer.from_pretrained(tiny_clip_folder, device="cpu").score(paths, "a cat").tolist(),
        "aesthetic": load_scorer("aesthetic", folder / "aesthetic.safetensors", clip_model=tiny_clip_folder,
                                 device="cpu").score(paths).tolist(),
        "hpsv2": load_scorer("hpsv2", folder / "hps.safetensors", device="cpu").score(paths, "a cat").tolist(),
    }
    return folder, paths, expected


def score_args(setup, tiny_clip_folder, out, *extra):
    folder, _, _ = setup
    return ["score", "--images", str(folder / "imgs"), "--prompt", "a cat", "--model", str(tiny_clip_folder),
            "--metric", "clip,aesthetic,hpsv2", "--rank-by", "aesthetic", "--batch-size", "2",
            "--weights", f"aesthetic={folder / 'aesthetic.safetensors'}", "--weights", f"hpsv2={folder / 'hps.safetensors'}",
            "--out", str(out), *extra]


def read_csv(path):
    return list(csv.DictReader(path.open()))


def test_one_column_per_metric_ranked_by_the_chosen_one(setup, tiny_clip_folder, tmp_path, capsys):
    _, paths, expected = setup
    out = tmp_path / "scores.csv"
    assert main(score_args(setup, tiny_clip_folder, out, "--report", str(tmp_path / "report.html"))) == 0
    stdout = capsys.readouterr().out
    rows = read_csv(out)
    assert list(rows[0]) == ["image", "prompt", "score", "rank", "error", "clip", "aesthetic", "hpsv2"]
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    for name, values in expected.items():
        assert [float(r[name]) for r in rows] == pytest.approx(values, abs=1e-5)
    assert [float(r["score"]) for r in rows] == [float(r["aesthetic"]) for r in rows]
    order = sorted(range(5), key=lambda i: -expected["aesthetic"][i])
    assert [int(rows[i]["rank"]) for i in order] == [1, 2, 3, 4, 5]
    for name in ("clip", "aesthetic", "hpsv2"):
        assert f"{np.mean(expected[name]):.4f}" in stdout and f"mean {name}" in stdout
    assert "(all prompts)" in stdout and "ranked by aesthetic" in stdout
    assert (tmp_path / "report.html").stat().st_size > 0 and "report:" in stdout


def test_resume_scores_only_what_is_missing(setup, tiny_clip_folder, tmp_path, capsys, monkeypatch):
    _, paths, expected = setup
    out = tmp_path / "scores.jsonl"
    assert main(score_args(setup, tiny_clip_folder, out)) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:20])  # interrupted inside the fourth row, before ranking
    calls = []
    original = ClipScorer.embed_images
    monkeypatch.setattr(ClipScorer, "embed_images", lambda self, px: calls.append(len(px)) or original(self, px))
    assert main(score_args(setup, tiny_clip_folder, out, "--resume")) == 0
    assert "3 pairs already scored, 2 to go" in capsys.readouterr().err
    assert sum(calls) == 2 * 2  # two images, two vision models (clip+aesthetic share one; hpsv2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in paths)  # none twice, none lost
    by_image = {r["image"]: r for r in rows}
    for name, values in expected.items():
        assert [by_image[str(p)][name] for p in paths] == pytest.approx(values, abs=1e-5)
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4, 5]


def test_resume_of_a_clip_file_adds_the_new_metrics(setup, tiny_clip_folder, tmp_path, capsys):
    folder, paths, expected = setup
    out = tmp_path / "scores.csv"
    assert main(["score", "--images", str(folder / "imgs"), "--prompt", "a cat", "--model", str(tiny_clip_folder),
                 "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "image,prompt,score,rank,error"  # the single-metric file
    assert main(score_args(setup, tiny_clip_folder, out, "--resume")) == 0
    assert "0 pairs already scored, 5 to go" in capsys.readouterr().err  # a row is done when all its metrics are
    rows = read_csv(out)
    assert len(rows) == 5 and [float(r["hpsv2"]) for r in rows] == pytest.approx(expected["hpsv2"], abs=1e-5)


@pytest.mark.parametrize("extra, message", [
    (["--metric", "clip,beauty"], "--metric: unknown metric 'beauty'; available: aesthetic, clip, hpsv2, pickscore"),
    (["--metric", "clip", "--rank-by", "aesthetic"], "--rank-by: 'aesthetic' is not one of --metric (clip); add it"),
    (["--metric", "clip,aesthetic", "--weights", "aesthetic"], "--weights: expected METRIC=SOURCE with METRIC one of "
     "--metric (clip, aesthetic), got 'aesthetic'"),
    (["--metric", "clip,aesthetic"], "metric 'aesthetic': 'hf://camenduru/improved-aesthetic-predictor/sac+logos+"
     "ava1-l14-linearMSE.pth': not in the local Hugging Face cache, and offline mode (HF_HUB_OFFLINE / "
     "local_files_only); on a machine with network run `hf download camenduru/improved-aesthetic-predictor "
     "sac+logos+ava1-l14-linearMSE.pth`"),
    (["--metric", "hpsv2", "--weights", "hpsv2=gone/HPS_v2.1_compressed.pt"], "metric 'hpsv2': weights file "
     "'gone/HPS_v2.1_compressed.pt' not found; the published weights are hf://xswu/HPSv2/HPS_v2.1_compressed.pt "
     "(https://huggingface.co/xswu/HPSv2): pass that, or a downloaded copy's path"),
    (["--metric", "hpsv2"], "checkpoint 'hf://xswu/HPSv2/HPS_v2.1_compressed.pt': pickle files (.ckpt, .pt, .pth, "
     ".bin) can run code when loaded; pass allow_pickle=True (CLI: --allow-pickle)"),
    (["--metric", "clip,aesthetic", "--report", "r.txt"], "--report 'r.txt': expected a file ending in .html or .htm"),
])  # fmt: skip
def test_one_line_errors(setup, tiny_clip_folder, tmp_path, capsys, monkeypatch, extra, message):
    folder, _, _ = setup
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    code = main(["score", "--images", str(folder / "imgs"), "--prompt", "a cat", "--model", str(tiny_clip_folder),
                 "--out", str(tmp_path / "s.csv"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_weights_from_a_hub_file_in_the_cache(setup, tiny_clip_folder, tmp_path, monkeypatch):
    """--weights aesthetic=hf://owner/name/file resolves through the Hugging Face cache (offline)."""
    from sdclip.testing import put_in_hub_cache

    folder, _, expected = setup
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    put_in_hub_cache(tmp_path / "hub", "someone/aesthetic-head", "l14/head.safetensors",
                     folder / "aesthetic.safetensors")
    out = tmp_path / "scores.csv"
    assert main(["score", "--images", str(folder / "imgs"), "--prompt", "a cat", "--model", str(tiny_clip_folder),
                 "--metric", "clip,aesthetic", "--weights", "aesthetic=hf://someone/aesthetic-head/l14/head.safetensors",
                 "--offline", "--out", str(out)]) == 0
    assert [float(r["aesthetic"]) for r in read_csv(out)] == pytest.approx(expected["aesthetic"], abs=1e-5)
