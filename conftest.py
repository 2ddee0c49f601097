"""Root fixtures: the names the package's docstring examples use, so ``--doctest-modules`` runs them.

The examples show structure on tiny random models (the real tokenizer, random weights); ``cond`` is an
SD 1.x ``TextConditioner``, ``sdxl`` an SDXL one, ``flux_cond`` a Flux one, ``pipe`` a tiny
``StableDiffusionPipeline``. Each is built once, on first use.
"""

from __future__ import annotations

import functools
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests and examples never reach for the network
# OpenMP threads that wait sleep instead of spinning (same numbers): the CLI and multi-process tests start
# processes with two torch threads each on two cores, where spin-waits slow a step up to five-fold.
# Set before anything imports torch, and inherited by those processes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@functools.cache
def _tiny(name: str):
    from sdclip import TextConditioner
    from sdclip.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

    if name == "pipe":
        return tiny_sd_pipeline()
    if name == "cond":
        return TextConditioner.from_pipeline(_tiny("pipe"))
    if name == "sdxl":
        return TextConditioner.from_pipeline(tiny_sdxl_pipeline())
    if name == "flux_cond":  # a Flux conditioner (CLIP-L pooled, T5 rows)
        from sdclip.testing_mmdit import tiny_flux_pipeline

        return TextConditioner.from_pipeline(tiny_flux_pipeline())
    raise KeyError(name)


@pytest.fixture(autouse=True)
def _doctest_models(request, doctest_namespace):
    """Give docstring examples ``cond``, ``sdxl``, ``pipe`` and ``flux_cond``, built only for examples that use them."""
    if "doctest" not in type(request.node).__name__.lower():
        return
    test = getattr(request.node, "dtest", None)
    if test is None:
        return
    names = {name for name in ("cond", "sdxl", "pipe", "flux_cond") if any(name in ex.source for ex in test.examples)}
    for name in names:
        doctest_namespace[name] = _tiny(name)
