"""TextConditioner(cuda_graphs=True) and sdclip.conditioning.cuda_graphs, on the CPU, against diffusers' encode_prompt.

No CUDA here, so three things are checked apart: (1) on the CPU the option changes nothing (same tensors
as diffusers); (2) the graph bookkeeping (buckets, padding, static buffers, copies out, recapture when
the weights move, eager fallback after a failed capture) through a CPU stand-in for the capture that
replays ``fn`` into the static outputs exactly as a CUDA graph replays its kernels into them; (3) the
captured function can be captured at all: dynamo traces the transformers forward in one graph, i.e.
it has no data-dependent host synchronisation (``.item()``, ``if tensor``), which CUDA graphs forbid.
The real capture runs in ``benchmarks/gpu_suite.py`` on a GPU, checked there against diffusers.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from sdclip import TextConditioner
from sdclip.conditioning.cuda_graphs import GraphedForward, bucket_size

TOL = 1e-5  # fp32: a batch padded to its bucket may round differently in the last bit, never more
PROMPTS = ["a photo of a cat", "an astronaut riding a horse", "", "portrait, 8k, detailed", "a red fox",
           "a castle", "a dog", "neon city, rain", "a bowl of ramen"]  # fmt: skip


class StandIn:
    """A CPU stand-in for ``torch.cuda.graph``: 'capture' runs fn once into static outputs; 'replay'
    recomputes fn on the static input and writes into those same buffers, as a graph replay does."""

    def __init__(self, fail: bool = False) -> None:
        self.captured: list[int] = []
        self.fail = fail

    def __call__(self, fn, static_in):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captured.append(static_in.shape[0])
        static_out = tuple(t.clone() for t in fn(static_in))

        def replay():
            for out, new in zip(static_out, fn(static_in)):
                out.copy_(new)

        return static_out, replay


def diffusers_encode(pipe, prompts, negatives, **kwargs):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                                  negative_prompt=negatives, **kwargs)


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def graphed(pipe, stand_in: StandIn, **options) -> TextConditioner:
    cond = TextConditioner.from_pipeline(pipe, cache_size=0, cuda_graphs=True)
    cond._graphs = GraphedForward(_capture=stand_in, **options)
    return cond


def test_bucket_sizes():
    assert [bucket_size(n, 128) for n in (1, 5, 8, 9, 16, 17, 65, 128)] == [1, 5, 8, 16, 16, 24, 72, 128]
    assert bucket_size(129, 128) is None and bucket_size(9, 12) is None and bucket_size(0, 128) is None


# -- (1) on the CPU the option changes nothing ------------------------------------------------------


@pytest.mark.parametrize("pipe_name", ["sd_pipe", "sdxl_pipe"])
def test_cpu_falls_back_to_the_eager_path(request, pipe_name):
    pipe = request.getfixturevalue(pipe_name)
    cond = TextConditioner.from_pipeline(pipe, cuda_graphs=True)
    negatives = ["blurry"] * 3
    ours = cond.encode(PROMPTS[:3], negatives)
    expected = diffusers_encode(pipe, PROMPTS[:3], negatives)
    assert max_diff(ours.prompt_embeds, expected[0]) == 0  # bit-identical, as without the option
    assert max_diff(ours.negative_prompt_embeds, expected[1]) == 0
    status = cond.cuda_graph_status
    assert status["graphs"] == 0 and status["replays"] == 0 and status["eager_calls"] == len(cond.encoders)
    assert TextConditioner.from_pipeline(pipe).cuda_graph_status is None


# -- (2) the graph bookkeeping, through the stand-in -------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4, 9])
def test_graph_path_equals_diffusers_sd1(sd_pipe, batch):
    stand_in = StandIn()
    cond = graphed(sd_pipe, stand_in)
    prompts, negatives = PROMPTS[:batch], ["blurry, lowres"] * batch
    ours = cond.encode(prompts, negatives)
    expected = diffusers_encode(sd_pipe, prompts, negatives)
    assert max_diff(ours.prompt_embeds, expected[0]) < TOL
    assert max_diff(ours.negative_prompt_embeds, expected[1]) < TOL
    unique = len(set(prompts + negatives))  # each unique text is one row of one encoder call
    assert stand_in.captured == [bucket_size(unique, 128)]
    assert cond.cuda_graph_status == {"graphs": 1, "replays": 1, "eager_calls": 0, "disabled": None}


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_graph_path_equals_diffusers_sdxl(sdxl_pipe, clip_skip):
    stand_in = StandIn()
    cond = graphed(sdxl_pipe, stand_in)
    prompts, negatives = PROMPTS[:2], ["blurry", "ugly"]
    ours = cond.encode(prompts, negatives, clip_skip=clip_skip, clip_skip_negative="diffusers")
    expected = diffusers_encode(sdxl_pipe, prompts, negatives, clip_skip=clip_skip)
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    for name, tensor in zip(names, expected, strict=True):
        assert max_diff(getattr(ours, name), tensor) < TOL, name
    # one graph per encoder and clip skip: with clip_skip the negatives use another (diffusers ignores it there)
    assert len(stand_in.captured) == (2 if clip_skip is None else 4)


def test_replays_reuse_graphs_and_never_overwrite_results(sd_pipe):
    stand_in = StandIn()
    cond = graphed(sd_pipe, stand_in)
    first = cond.encode("a photo of a cat", "blurry")
    kept = first.prompt_embeds.clone()
    second = cond.encode("a red fox", "blurry")  # same bucket (2 rows): a replay into the same buffers
    assert stand_in.captured == [2] and cond.cuda_graph_status["replays"] == 2
    assert torch.equal(first.prompt_embeds, kept)  # the first result is a copy, not the graph's buffer
    assert max_diff(second.prompt_embeds, diffusers_encode(sd_pipe, ["a red fox"], ["blurry"])[0]) < TOL
    cond.clear_cache()  # forgets encodings, keeps graphs: they depend on the weights, not on the prompts
    cond.encode("a red fox", "blurry")
    assert stand_in.captured == [2] and cond.cuda_graph_status["replays"] == 3


def test_graphs_are_captured_again_when_the_weights_move(sd_pipe):
    import copy

    pipe = copy.deepcopy(sd_pipe)
    stand_in = StandIn()
    cond = graphed(pipe, stand_in)
    cond.encode("a cat", "blurry")
    pipe.text_encoder.to(torch.float64)  # new storage for every parameter
    result = cond.encode("a cat", "blurry")
    assert stand_in.captured == [2, 2] and result.prompt_embeds.dtype == torch.float64
    assert max_diff(result.prompt_embeds, diffusers_encode(pipe, ["a cat"], ["blurry"])[0]) < TOL


def test_large_batches_run_eagerly(sd_pipe):
    stand_in = StandIn()
    cond = graphed(sd_pipe, stand_in, max_batch=4)
    prompts = PROMPTS[:5]
    result = cond.encode(prompts, "")
    assert stand_in.captured == [] and cond.cuda_graph_status["eager_calls"] == 1
    assert max_diff(result.prompt_embeds, diffusers_encode(sd_pipe, prompts, [""] * 5)[0]) < TOL


def test_a_failed_capture_turns_graphs_off_and_stays_correct(sd_pipe):
    cond = graphed(sd_pipe, StandIn(fail=True))
    with pytest.warns(RuntimeWarning, match="cuda_graphs: capturing the text encoder failed, it runs eagerly"):
        result = cond.encode("a cat", "blurry")
    assert max_diff(result.prompt_embeds, diffusers_encode(sd_pipe, ["a cat"], ["blurry"])[0]) == 0
    status = cond.cuda_graph_status
    assert status["disabled"] == "RuntimeError: operation not permitted when stream is capturing"
    cond.encode("a dog", "blurry")  # no second warning, no second try
    assert cond.cuda_graph_status["eager_calls"] == 2


def test_autograd_on_runs_eagerly():
    stand_in = StandIn()
    graphed_fn = GraphedForward(_capture=stand_in)
    ids = torch.arange(2 * 77).reshape(2, 77)
    out = graphed_fn("key", ids, lambda x: (x * 2,))
    assert torch.equal(out[0], ids * 2) and stand_in.captured == [] and graphed_fn.status["eager_calls"] == 1
    with torch.no_grad():
        out = graphed_fn("key", ids, lambda x: (x * 2,))
    assert torch.equal(out[0], ids * 2) and stand_in.captured == [2] and graphed_fn.status["replays"] == 1


# -- (3) the forward can be captured ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "hidden_states"), [("text_encoder", False), ("text_encoder_2", True)])
def test_the_encoder_forward_has_no_host_synchronisation(sdxl_pipe, name, hidden_states):
    model = getattr(sdxl_pipe, name)
    ids = torch.tensor([sdxl_pipe.tokenizer("a cat", padding="max_length", max_length=77).input_ids] * 2)
    with torch.inference_mode():
        expected = model(ids, output_hidden_states=hidden_states)  # also installs transformers' output hooks
        traced = torch.compile(lambda x: model(x, output_hidden_states=hidden_states), fullgraph=True,
                               backend="eager", dynamic=False)
        try:
            out = traced(ids)  # fullgraph: any graph break (a sync on a tensor value) raises
        finally:
            torch._dynamo.reset()
    assert torch.equal(out.last_hidden_state, expected.last_hidden_state)


def test_docstring_examples():
    import doctest

    from sdclip import TextConditioner as Conditioner
    from sdclip.conditioning import cuda_graphs
    from sdclip.testing import tiny_sd_pipeline

    cond = Conditioner.from_pipeline(tiny_sd_pipeline())  # the name encoder_forward's example uses
    result = doctest.testmod(cuda_graphs, extraglobs={"cond": cond})
    assert result.attempted > 0 and result.failed == 0
