"""Every example in README.md runs as written.

Offline, the hub ids and folders the README names are stood in for by tiny random models in the real
architectures' shapes: a Hugging Face cache holding ``openai/clip-vit-large-patch14``, and the
``weights/...`` folders, in a scratch working directory. Python blocks run in order in one namespace,
bash blocks line by line (the install and test commands excepted: CI runs those itself).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIPPED_COMMANDS = ("pip install", "python -m pytest")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def commands() -> list[str]:
    lines = []
    for block in blocks("bash"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#") and not line.startswith(SKIPPED_COMMANDS):
                lines.append(line)
    return lines


def test_readme_commands_are_valid_sdclip_command_lines():
    """Fast: every shell example parses with sdclip's own argument parser (a renamed flag fails here)."""
    from sdclip.cli.app import build_parser

    lines = commands()
    assert len(lines) >= 5 and len(blocks("python")) >= 5, "the README lost its examples (or this test its regex)"
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "sdclip", line
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {line}")
        assert args.command == argv[1] and callable(args.run)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, pipeline_folder, clip_model_folder, sdxl_folder_for_readme, mmdit_folders_for_readme):
    """A scratch directory laid out as a README reader's would be, with tiny stand-in models."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from sdclip.models.tokenizer import SHIPPED_TOKENIZER_DIR

    root = tmp_path_factory.mktemp("reader")
    weights = root / "weights"
    shutil.copytree(clip_model_folder, weights / "clip-vit-large-patch14")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SHIPPED_TOKENIZER_DIR / name, weights / "clip-vit-large-patch14" / name)
    shutil.copytree(pipeline_folder, weights / "stable-diffusion-v1-5")
    if sdxl_folder_for_readme is not None:
        shutil.copytree(sdxl_folder_for_readme, weights / "stable-diffusion-xl-base-1.0")
    for name, folder in mmdit_folders_for_readme.items():  # SD3 / Flux stand-ins
        shutil.copytree(folder, weights / name)
    snapshot = root / "hub" / "models--openai--clip-vit-large-patch14" / "snapshots" / ("0" * 40)
    shutil.copytree(weights / "clip-vit-large-patch14", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    # the aesthetic head (LAION's layers.N keys, on the stand-in CLIP's width) and HPS v2 (OpenCLIP layout)
    from sdclip.testing import random_openclip_state_dict

    widths = (96, 64, 32, 16, 8, 1)
    save_file({f"layers.{i}.{kind}": torch.randn(*((o, n) if kind == "weight" else (o,))) * 0.2
               for i, n, o in zip((0, 2, 4, 6, 7), widths[:-1], widths[1:]) for kind in ("weight", "bias")},
              str(weights / "sac+logos+ava1-l14-linearMSE.safetensors"))
    save_file(random_openclip_state_dict(), str(weights / "HPS_v2.1_compressed.safetensors"))
    # the published files as the hub cache holds them after a download (the README's default sources)
    from sdclip.testing import put_in_hub_cache

    torch.save(load_file(weights / "sac+logos+ava1-l14-linearMSE.safetensors"), root / "head.pth")
    put_in_hub_cache(root / "hub", "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth",
                     root / "head.pth")
    torch.save({"state_dict": random_openclip_state_dict()}, root / "hps.pt")
    put_in_hub_cache(root / "hub", "xswu/HPSv2", "HPS_v2.1_compressed.pt", root / "hps.pt")
    (root / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 128)}, str(root / "embeddings" / "my-style.safetensors"))
    rng = np.random.default_rng(0)

    def image(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(path)
        return path.name

    for name in ("a.png", "b.png", "c.png", "d.png", "CLIP.png"):
        image(root / name)
    outputs = [image(root / "outputs" / f"cat_{index}.png") for index in range(4)]
    (root / "run.jsonl").write_text("".join(
        f'{{"image": "outputs/{name}", "prompt": "{"a cat" if index < 2 else "a dog"}"}}\n'
        for index, name in enumerate(outputs)
    ))
    for index in range(8):  # the training example's captioned folder
        image(root / "captions" / f"{index}.png")
        (root / "captions" / f"{index}.txt").write_text(f"a photo of a {'cat' if index % 2 else 'dog'} {index}")
    return root


@pytest.fixture(scope="module")
def sdxl_folder_for_readme(request):
    """The tiny SDXL pipeline folder when the SDXL fixtures exist (they come with SDXL support)."""
    try:
        return request.getfixturevalue("sdxl_pipeline_folder")
    except pytest.FixtureLookupError:
        return None


@pytest.fixture(scope="module")
def mmdit_folders_for_readme(request):
    """The tiny SD3 and Flux pipeline folders, under the names the README uses."""
    return {"stable-diffusion-3.5-medium": request.getfixturevalue("sd3_pipeline_folder"),
            "FLUX.1-dev": request.getfixturevalue("flux_pipeline_folder")}


def reader_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(root / "hub"), MPLBACKEND="Agg")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.slow
def test_readme_python_examples_run(workspace, monkeypatch):
    import warnings

    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(workspace / "hub"))
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, code in enumerate(blocks("python")):
            try:
                exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)
            except Exception as error:  # name the block that broke
                raise AssertionError(f"README python block {index + 1} failed: {error!r}\n{code}") from error
    # what the examples promise in their comments, on the tiny stand-ins
    assert tuple(namespace["scores"].shape) == (2,)
    ranking = namespace["ranking"]
    assert sorted(ranking.indices) == [0, 1, 2, 3] and list(ranking.scores) == sorted(ranking.scores, reverse=True)
    assert namespace["best"].keys() == {"a photo of a cat", "a photo of a dog"}
    probs = namespace["probs"]
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1.0) < 1e-4
    assert (workspace / "tokens.png").stat().st_size > 1000
    assert namespace["trained"].steps == 12 and namespace["colour_probs"].shape == (1, 4)


@pytest.mark.slow
@pytest.mark.parametrize("command", commands())
def test_readme_commands_run(workspace, command):
    argv = shlex.split(command)
    assert argv[0] == "sdclip", command
    result = subprocess.run(argv, cwd=workspace, env=reader_env(workspace), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
