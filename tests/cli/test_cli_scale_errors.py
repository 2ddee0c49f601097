"""One-line refusals of the scale-out options (checked before any model loads)."""

from __future__ import annotations

import io
import tarfile

import pytest

from sdclip.cli import main


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")


def err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_processes_must_be_positive(tmp_path, capsys):
    assert main(["score", "--images", str(tmp_path), "--prompt", "a", "--processes", "0"]) == 2
    assert "sdclip score: error: --processes: expected an integer >= 1, got 0" in err(capsys)


def test_launched_without_out_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["score", "--images", str(tmp_path / "a.png"), "--prompt", "a"]) == 2
    assert "--out: needed when several processes score (each writes its part next to it)" in err(capsys)


def test_embeddings_refuse_resume_and_other_metrics(tmp_path, capsys):
    out = str(tmp_path / "s.csv")
    assert main(["score", "--embeddings", str(tmp_path), "--prompt", "a", "--out", out, "--resume"]) == 2
    assert ("--resume: not used with --embeddings (scoring stored embeddings takes seconds); pass --overwrite "
            "to replace --out") in err(capsys)
    assert main(["score", "--embeddings", str(tmp_path), "--prompt", "a", "--metric", "clip,aesthetic"]) == 2
    assert "--embeddings: stored embeddings give the clip metric only; drop --metric" in err(capsys)


def test_embed_refuses_leftover_parts_without_resume(tmp_path, capsys):
    (tmp_path / "emb" / "parts").mkdir(parents=True)
    (tmp_path / "emb" / "parts" / "part-00000-of-00001.jsonl").write_text("")
    assert main(["embed", "--images", str(tmp_path), "--out", str(tmp_path / "emb")]) == 2
    assert (f"--out '{tmp_path / 'emb'}': parts of an unfinished run are in parts/; pass --resume to finish it "
            "(with any number of processes), or --overwrite to start again") in err(capsys)


def test_embed_resume_of_a_finished_folder_does_nothing(tmp_path, capsys):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "sdclip-embeddings.json").write_text("{}")
    assert main(["embed", "--images", str(tmp_path), "--out", str(tmp_path / "emb"), "--resume"]) == 0
    assert "is complete; nothing to resume" in " ".join(capsys.readouterr().out.split())


def test_webdataset_without_images_is_refused(tmp_path, capsys):
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        info = tarfile.TarInfo("0001.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    assert main(["score", "--webdataset", str(tmp_path)]) == 2
    assert f"--webdataset: no images in {tmp_path}; expected img2dataset shards" in err(capsys)
