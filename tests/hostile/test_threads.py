"""Item 1: ``TextConditioner`` and ``ClipScorer`` shared by threads (as a web server shares them).

Decision: both classes are safe to share across threads. Every result a thread gets equals (shape and
values) what one thread alone gets, no call raises, and the cache never holds a wrong entry. Chunking
(``sdclip.chunk_prompt``) from several threads on one shared tokenizer gives the same chunks as from one.

Each test computes its single-threaded reference first, on a separate object, then runs 8 threads
over many iterations, then checks the shared object's cache one thread at a time.
"""

from __future__ import annotations

import threading

import pytest
import torch

THREADS = 8
ITERATIONS = 25
# short prompts of different token counts: the padding is where a race shows (ids of 10-12, not 77)
PROMPTS = [f"a photo of a {animal} number {i}" + " very" * (i % 5) for i in range(16) for animal in ("cat", "fox")]
# encode: mostly prompts no thread has encoded yet (a cache hit skips the tokenizer, where the race is)
ENCODE_PROMPTS = [f"{adjective} {p}" for adjective in ("a", "one", "the", "some") for p in PROMPTS]


def _hammer(work, items) -> list[str]:
    """Run ``work(item)`` from THREADS threads, ITERATIONS each, released together; returns failures."""
    failures: list[str] = []
    barrier = threading.Barrier(THREADS)

    def thread(k: int) -> None:
        barrier.wait()
        for iteration in range(ITERATIONS):
            item = items[(k * 17 + iteration) % len(items)]  # threads overlap a little: some cache hits
            try:
                problem = work(item)
            except Exception as error:  # noqa: BLE001 - any exception is a failure of the contract
                problem = f"{type(error).__name__}: {error}"
            if problem:
                failures.append(f"{item!r}: {problem}")

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def _differs(got: torch.Tensor, want: torch.Tensor) -> str | None:
    if tuple(got.shape) != tuple(want.shape):
        return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if not torch.allclose(got, want, atol=1e-5, rtol=1e-5):
        return f"values differ by {(got - want).abs().max().item():.3g}"
    return None


# what threads of a web server would mix: diffusers-style prompts and long weighted ones
CASES = [(p, "plain", True) for p in PROMPTS] + [(p, "a1111", False) for p in PROMPTS] + [(p, "comfy", True) for p in PROMPTS[::4]]
ENCODE_CASES = [(p, ("plain", "a1111", "plain", "comfy")[i % 4], i % 4 != 1) for i, p in enumerate(ENCODE_PROMPTS)]


@pytest.mark.slow
def test_encode_from_eight_threads_on_one_conditioner(pipeline_folder, cached_tensors):
    """Issue: ValueError/RuntimeError now and then, and afterwards a (1, 11, hidden) tensor from the cache."""
    from sdclip import TextConditioner

    reference_cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu", cache_size=0)
    reference = {case: reference_cond.encode(case[0], syntax=case[1], truncate=case[2]).prompt_embeds
                 for case in ENCODE_CASES}
    shared = TextConditioner.from_pretrained(pipeline_folder, device="cpu")  # default cache

    def work(case):
        prompt, syntax, truncate = case
        return _differs(shared.encode(prompt, syntax=syntax, truncate=truncate).prompt_embeds, reference[case])

    failures = _hammer(work, ENCODE_CASES)
    assert not failures, f"{len(failures)} wrong results or errors, e.g. {failures[:3]}"

    # afterwards, one thread: every cached entry is right
    after = [f"{case!r}: {problem}" for case in ENCODE_CASES if (problem := work(case))]
    assert not after, f"the cache holds wrong entries: {after[:3]}"
    for tensor in cached_tensors(shared):
        if tensor.ndim == 3 or tensor.dtype == torch.long:  # hidden (k, 77, H) and ids (k, 77)
            assert tensor.shape[1] == 77, f"a cached tensor of shape {tuple(tensor.shape)}"


def test_chunking_from_eight_threads_on_one_tokenizer():
    """Issue: chunks of 10-12 tokens instead of 77 when several threads chunk with one tokenizer."""
    from sdclip import chunk_prompt, load_tokenizer

    tokenizer = load_tokenizer()
    alone = load_tokenizer()
    reference = {case: chunk_prompt(case[0], alone, syntax=case[1], truncate=case[2]).chunks for case in CASES}

    def work(case) -> str | None:
        chunks = chunk_prompt(case[0], tokenizer, syntax=case[1], truncate=case[2]).chunks
        if any(len(chunk.ids) != 77 for chunk in chunks):
            return f"chunk lengths {[len(c.ids) for c in chunks]}, expected 77"
        return None if chunks == reference[case] else "chunks differ from one thread's"

    failures = _hammer(work, CASES)
    assert not failures, f"{len(failures)} wrong chunkings, e.g. {failures[:3]}"


@pytest.mark.slow
def test_score_from_eight_threads_on_one_scorer(clip_model_folder, cached_tensors):
    """The scorer shares its tokenizer, model and prompt cache the same way: same results as one thread."""
    import numpy as np
    from PIL import Image

    from sdclip import ClipScorer

    rs = np.random.RandomState(0)
    images = [Image.fromarray(rs.randint(0, 256, (40, 44, 3), dtype=np.uint8)) for _ in range(2)]
    loaded = ClipScorer.from_pretrained(clip_model_folder, device="cpu")
    alone = ClipScorer(loaded.model, loaded.tokenizer, cache_size=0)
    reference = {p: alone.score(images, p) for p in PROMPTS}
    shared = ClipScorer.from_pretrained(clip_model_folder, device="cpu", workers=2)

    failures = _hammer(lambda p: _differs(shared.score(images, p), reference[p]), PROMPTS)
    assert not failures, f"{len(failures)} wrong scores or errors, e.g. {failures[:3]}"
    after = [p for p in PROMPTS if _differs(shared.score(images, p), reference[p])]
    assert not after, f"the scorer's cache holds wrong entries for {after[:3]}"
    dims = {tuple(t.shape) for t in cached_tensors(shared)}
    assert dims == {(shared.model.config.projection_dim,)}, dims
