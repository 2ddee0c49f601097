"""Fixtures of the hostile suite. The tiny models come from ``tests/conftest.py`` (``pipeline_folder``,
``clip_model_folder``); what is here builds hostile surroundings: unwritable folders, read-only mounts.

``cached_tensors`` is the ONE place that reaches into sdclip's internals (the prompt caches). When the
caches move or change shape, update it here and nowhere else.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _cached_tensors(owner) -> list:
    """Every tensor held by the prompt cache of a ``TextConditioner`` or ``ClipScorer``.

    Today both keep an ``sdclip._lru.LRUCache`` in ``owner._cache``; its public ``items()`` gives
    ``(key, value)`` pairs (its ``_items`` stores ``key -> (value, nbytes)`` since the byte bound), where
    value is a tensor (``ClipScorer``: one (D,) row) or a tuple of tensors (``TextConditioner``:
    ``(hidden (k, 77, H), pooled (D,), ids (k, 77))``).
    """
    import torch

    values = [value for _, value in owner._cache.items()]
    tensors = []
    for value in values:
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, torch.Tensor):
                tensors.append(item)
    return tensors


@pytest.fixture
def cached_tensors():
    """``cached_tensors(owner)``: the tensors in a conditioner's or scorer's prompt cache."""
    return _cached_tensors


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # rich tables: keep long tmp paths on one line


@pytest.fixture
def immutable_dir(tmp_path) -> Path:
    """An empty folder nobody may write into, root included: ``chattr +i`` (permissions do not stop
    root, and these tests may run as root). Skipped where the file system has no immutable flag."""
    folder = tmp_path / "immutable"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        (folder / "probe").touch()
    except OSError:
        pass
    else:
        (folder / "probe").unlink()
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        pytest.skip("chattr +i did not make the folder unwritable")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def read_only_mount_wrap(tmp_path_factory):
    """A command prefix that runs a child process in a private mount namespace where a folder is an
    empty read-only tmpfs: ``wrap(folder) + [python, ...]``. Needs ``unshare`` and mount rights (root
    in a container usually has them); skipped otherwise. The mount vanishes with the child."""
    probe = tmp_path_factory.mktemp("ro-probe")

    def wrap(folder: Path) -> list[str]:
        script = 'mount -t tmpfs -o ro,size=64k tmpfs "$0" && exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(folder)]

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    check = subprocess.run([*wrap(probe), "sh", "-c", 'touch "$0/x"', str(probe)], capture_output=True, text=True)
    if "Read-only file system" not in check.stderr:
        pytest.skip(f"cannot mount a read-only tmpfs here ({check.stderr.strip()[:200]})")
    return wrap


@pytest.fixture
def two_images(tmp_path) -> list[Path]:
    from ._support import save_images

    return save_images(tmp_path / "imgs", 2)


_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """The hostile suite is end to end by nature (whole CLI runs, child processes, threads, huge inputs):
    all of it is ``slow``, so the fast lane leaves it to CI, which runs everything."""
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
