"""A hub that cannot be reached is detected once, quickly: the cache, or sdclip's one line (issue 16 #16)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdclip import WeightsNotAvailableError
from sdclip.models.loading import load_text_encoders
from sdclip.models.sources import hub_reachable, resolve_source

REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def online_mode(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset (the root conftest sets it), an empty cache, the hub at an address that refuses."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", REFUSED)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    return tmp_path / "hub"


def test_an_unreachable_hub_is_one_quick_error_without_retry_logs(online_mode, caplog):
    assert not hub_reachable()
    start = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="huggingface_hub"):
        with pytest.raises(WeightsNotAvailableError, match=(
            r"^model 'someone/not-cached': weights are not in the local Hugging Face cache and the hub cannot be "
            r"reached .*hf download someone/not-cached --local-dir weights/not-cached"
        )):
            resolve_source("someone/not-cached")
    assert time.perf_counter() - start < 3
    assert not [r for r in caplog.records if "Retry" in r.getMessage()]


def test_an_unreachable_hub_still_serves_the_cache(online_mode, text_sources):
    repo = online_mode / "models--someone--tiny-sd"
    shutil.copytree(text_sources["pipeline"], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = load_text_encoders("someone/tiny-sd", device="cpu")
    assert loaded.encoders[0].source.path == repo / "snapshots" / ("0" * 40)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", [None, REFUSED, "http://10.255.255.1"])  # default, refused, black hole
def test_the_readme_command_without_network_prints_one_line_within_seconds(tmp_path, endpoint):
    if endpoint is None and hub_reachable():
        pytest.skip("this machine reaches the hub: the real download would start")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE" and "proxy" not in k.lower()}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), PYTHONPATH=str(ROOT))
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "sdclip", "encode", "x", "--out", str(tmp_path / "e.safetensors")],
                            capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "sdclip encode: error: model 'openai/clip-vit-large-patch14': weights are not in the local Hugging Face cache"
    ), result.stderr
    assert elapsed < 12, f"{elapsed:.1f} s (huggingface_hub's own retries took 23-34 s; the probe waits 2 s at most)"
