"""``sdclip demo``: offline, on the shipped model; its tables and files agree with transformers' own features."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdclip.cli import main
from sdclip.cli.demo import PROMPTS, SCENE
from sdclip.datasets.shapes import COLORS

ROOT = Path(__file__).resolve().parents[2]


def _reference_scores(out: Path, images: list[str], prompts: list[str]) -> torch.Tensor:
    """100 * cos of transformers' CLIPModel features, with CLIPImageProcessor's preprocessing."""
    from PIL import Image
    from transformers import CLIPImageProcessorPil, CLIPModel

    from sdclip.models.sources import DEMO_MODEL, PACKAGED_MODELS
    from sdclip.models.tokenizer import load_tokenizer

    folder = PACKAGED_MODELS[DEMO_MODEL]
    model = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    pixels = CLIPImageProcessorPil.from_pretrained(folder)([Image.open(out / i).convert("RGB") for i in images],
                                                           return_tensors="pt").pixel_values  # fmt: skip
    ids = load_tokenizer()(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1)
    return 100 * image @ text.T


@pytest.mark.slow
def test_demo_writes_what_it_prints_and_matches_transformers(tmp_path, capsys):
    out = tmp_path / "tour"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "images ranked against prompts" in printed and "zero-shot classification" in printed
    assert "(5, 77, 128)" in printed and "pooled cosine" in printed
    names = {p.name for p in out.iterdir()}
    assert {"scores.csv", "classification.csv", "prompt_embeds.safetensors", "prompt_similarity.png", "report.html"} <= names
    assert len(list((out / "images").glob("*.png"))) == len(SCENE)
    assert len([n for n in names if n.startswith("ranked_")]) == len(PROMPTS)

    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == len(SCENE) * len(PROMPTS)
    images = sorted({row["image"] for row in rows})
    reference = _reference_scores(out, images, PROMPTS)
    for row in rows:
        expected = reference[images.index(row["image"]), PROMPTS.index(row["prompt"])].item()
        assert abs(float(row["score"]) - expected) < 1e-3, row
    for prompt in PROMPTS:  # rank 1 is the best score
        ranked = sorted((int(r["rank"]), float(r["score"])) for r in rows if r["prompt"] == prompt)
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    # the shipped model knows colours without fail: each prompt's best image has the prompt's colour
    best = {r["prompt"]: r["image"] for r in rows if r["rank"] == "1"}
    for prompt in PROMPTS:
        color = next(word for word in prompt.split() if word in COLORS)
        assert f"_{color}_" in best[prompt], (prompt, best[prompt])
    classified = list(csv.DictReader((out / "classification.csv").open()))
    assert all(row["truth"].split()[1] == row["predicted"].split()[1] for row in classified)  # the colour


def test_demo_out_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "sdclip", "demo", "--out", str(target)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"sdclip demo: error: --out '{target}': is a file; expected a folder"]
