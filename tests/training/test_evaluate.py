"""Recall@K and zero-shot accuracy against plain-Python recomputations, and the CSV log + curves."""

from __future__ import annotations

import math

import pytest
import torch

from sdclip.training import plot_log, read_log, recall_at_k, zero_shot_accuracy
from sdclip.training.evaluate import label_of
from sdclip.training.logs import LOG_COLUMNS, CsvLog


def _reference_recall(sims: list[list[float]], k: int) -> float:
    hits = 0
    for i, row in enumerate(sims):
        better = sum(1 for j, s in enumerate(row) if j != i and s >= row[i])  # a tie counts against it
        hits += better < k
    return hits / len(sims)


def test_recall_matches_a_plain_python_ranking():
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(30, 8, generator=generator), torch.randn(30, 8, generator=generator)
    texts[:10] = images[:10] + 0.3 * texts[:10]  # some pairs match, so recall is not trivial
    unit = lambda x: (x / x.norm(dim=1, keepdim=True)).double()  # noqa: E731
    sims = (unit(images) @ unit(texts).T).tolist()
    transposed = [list(col) for col in zip(*sims)]
    got = recall_at_k(images, texts)
    for k in (1, 5, 10):
        assert got[f"i2t_r{k}"] == pytest.approx(_reference_recall(sims, k))
        assert got[f"t2i_r{k}"] == pytest.approx(_reference_recall(transposed, k))
    assert 0 < got["i2t_r1"] < got["i2t_r10"] < 1


def test_zero_shot_accuracy_and_labels_from_captions():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.2, 1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert zero_shot_accuracy(images, labels, [0, 1, 1, -1]) == pytest.approx(2 / 3)
    assert math.isnan(zero_shot_accuracy(images, labels, [-1] * 4))
    names = ["star", "red star", "circle"]
    assert [label_of(c, names) for c in ["A Red Star", "a blue star", "a square"]] == [1, 0, -1]
    assert label_of("whatever", names, given="circle") == 2 and label_of("x", names, given="cube") == -1


def test_log_keeps_earlier_rows_on_resume_and_draws_curves(tmp_path):
    log = CsvLog(tmp_path / "log.csv")
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step, "t2i_r1": float("nan") if step < 3 else 0.5})
    CsvLog(tmp_path / "log.csv", resume_step=2).write({"step": 3, "loss": 0.25})
    rows = read_log(tmp_path / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2] == {"step": 3.0, "loss": 0.25}
    assert (tmp_path / "log.csv").read_text().splitlines()[0].split(",") == list(LOG_COLUMNS)
    png = plot_log(tmp_path / "log.csv", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
