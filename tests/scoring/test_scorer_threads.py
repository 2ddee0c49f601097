"""One ClipScorer shared by eight threads (a web server's use) gives exactly the single-threaded results
and leaves its text cache holding only right entries (issue 16 #1)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from sdclip import ClipScorer

# features of one text encoded alone or in a batch differ in the last float32 bits: 1e-5, not 0
PROMPTS = [f"a photo of {n} cats on a {color} sofa" for n in range(12) for color in ("red", "blue")]


@pytest.mark.slow
def test_eight_threads_match_single_threaded_references(tiny_clip_folder, tmp_path):
    rs = np.random.RandomState(0)
    files = []
    for index in range(6):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rs.randint(0, 256, (50 + index, 64, 3), dtype=np.uint8)).save(path)
        files.append(path)
    reference_scorer = ClipScorer.from_pretrained(tiny_clip_folder, device="cpu", batch_size=4)
    expected_text = {p: reference_scorer.text_features(p) for p in PROMPTS}
    expected_scores = {p: reference_scorer.score(files, p) for p in PROMPTS[:8]}

    shared = ClipScorer(reference_scorer.model, reference_scorer.tokenizer, batch_size=4, cache_size=5)  # evicts often
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(3):
                for k in range(worker, len(PROMPTS), 3):
                    prompt = PROMPTS[(k + round_) % len(PROMPTS)]
                    features = shared.text_features(prompt)
                    torch.testing.assert_close(features, expected_text[prompt], rtol=1e-5, atol=1e-5)
                prompt = PROMPTS[(worker + round_) % 8]
                torch.testing.assert_close(shared.score(files, prompt), expected_scores[prompt], rtol=0, atol=1e-4)
                shared.text_features(PROMPTS)  # a long batch across the cache's size
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not failures, failures[0]
    for prompt in PROMPTS:  # afterwards, single-threaded: the cache holds no wrong entry
        torch.testing.assert_close(shared.text_features(prompt), expected_text[prompt], rtol=1e-5, atol=1e-5)
    assert len(shared._cache) <= 5
