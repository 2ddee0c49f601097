"""Opt-in CUDA graphs for a text encoder's forward at the static 77-token shape.

At batch 1 text conditioning on a GPU is bound by kernel launches, not by math: CLIP L/14's text
tower is ~200 small kernels per forward, and launching each from Python costs more than running it.
A CUDA graph records the whole forward once per batch size and replays it with one launch.

``GraphedForward`` wraps any ``fn(ids) -> tuple of tensors`` whose batch rows are independent (a text
encoder's are: attention and layer norm stay within a sequence). A batch is padded up to a bucket
size (exact up to 8 rows, then multiples of 8 up to ``max_batch``) with copies of its first row; one
graph per (key, bucket) is captured on first use; the real rows of the outputs are copied out, so
a later replay never changes a tensor the caller holds. It calls ``fn`` directly instead where graphs
cannot run: on the CPU (or any non-CUDA device), for batches over ``max_batch``, and, once a capture
has failed, for the rest of its life (``status`` keeps the reason). A graph reads the weights at the
addresses they had when it was captured, so each graph remembers where its module's first parameter
was and is captured again when it moved (``.to()``, a resized embedding table). Weights changed in
place are simply read by the next replay.

``TextConditioner(cuda_graphs=True)`` keeps one ``GraphedForward`` and hands ``core.encode_texts`` an
``encoder_forward`` built here; the functional core itself runs eagerly unless given one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .core import run_encoder

if TYPE_CHECKING:
    import torch

    from .types import EncoderSpec

    # capture(fn, static_input) -> (static outputs, replay); tests pass a CPU stand-in
    Capture = Callable[[Callable[[torch.Tensor], tuple], torch.Tensor], tuple[tuple, Callable[[], None]]]

__all__ = ["GraphedForward", "bucket_size", "encoder_forward"]

_EXACT_UP_TO = 8  # batches up to this many rows get a graph of their own size; larger round up to x8


def bucket_size(rows: int, max_batch: int) -> int | None:
    """The graph batch size that serves ``rows`` rows, or None when graphs do not serve it.

    Example:
        >>> [bucket_size(n, 128) for n in (1, 2, 8, 9, 65, 128, 129)]
        [1, 2, 8, 16, 72, 128, None]
    """
    if rows < 1 or rows > max_batch:
        return None
    size = rows if rows <= _EXACT_UP_TO else -(-rows // _EXACT_UP_TO) * _EXACT_UP_TO
    return size if size <= max_batch else None


def _weights_fingerprint(module: Any) -> tuple:
    """Where ``module``'s first parameter (a text encoder's token embedding) lives, its dtype and shape:
    ``.to()`` gives every parameter new storage, and textual inversion resizes the embedding table."""
    first = next(module.parameters(), None) if module is not None else None
    return () if first is None else (first.data_ptr(), first.dtype, first.device, tuple(first.shape))


class GraphedForward:
    """Run ``fn(ids)`` through CUDA graphs captured per batch-size bucket, eagerly where they cannot run.

    Args:
        max_batch: largest batch (rows) served by a graph; larger batches run eagerly.
        warmup: eager runs on a side stream before each capture (lazy initialisation, cuBLAS plans).

    Example:
        >>> import torch
        >>> graphed = GraphedForward()
        >>> ids = torch.ones(2, 77, dtype=torch.long)
        >>> with torch.inference_mode():  # on the CPU: fn itself
        ...     graphed("encoder 0", ids, lambda x: (x * 2,))[0].shape
        torch.Size([2, 77])
        >>> graphed.status["eager_calls"], graphed.status["graphs"]
        (1, 0)
    """

    def __init__(self, *, max_batch: int = 128, warmup: int = 2, _capture: Capture | None = None) -> None:
        self.max_batch = max_batch
        self.warmup = warmup
        self._capture_fn = _capture
        self._graphs: dict[tuple, tuple] = {}  # (key, bucket) -> (fingerprint, static input, static outputs, replay)
        self._pool: Any = None
        self.replays = 0
        self.eager_calls = 0
        self.disabled: str | None = None

    @property
    def status(self) -> dict:
        """``{"graphs", "replays", "eager_calls", "disabled"}``: what ran how, and why graphs stopped if they did."""
        return {"graphs": len(self._graphs), "replays": self.replays, "eager_calls": self.eager_calls,
                "disabled": self.disabled}

    def clear(self) -> None:
        """Drop every captured graph (and the memory they hold); the next calls capture again."""
        self._graphs.clear()
        self._pool = None

    def __call__(
        self, key: Hashable, ids: torch.Tensor, fn: Callable[[torch.Tensor], tuple], *, module: Any = None
    ) -> tuple:
        """``fn(ids)``, through the graph for ``key`` and ``ids``' batch bucket when one can serve it
        (under ``torch.no_grad()`` or ``torch.inference_mode()``; with autograd on, ``fn`` runs eagerly).

        Args:
            key: what besides the batch size makes ``fn`` a different computation (encoder, clip skip).
            ids: (N, L) int64 token ids.
            fn: the computation; rows of its outputs must depend only on the same rows of ``ids``.
            module: the model ``fn`` runs; graphs are captured again when its weights move.

        Returns:
            ``fn``'s tuple of tensors for the N rows (copies, never the graph's own buffers).
        """
        import torch

        bucket = bucket_size(ids.shape[0], self.max_batch)
        capture = self._capture_fn or (_capture_cuda if ids.device.type == "cuda" else None)
        # with autograd on, a replay would return tensors cut off from the graph: run eagerly instead
        if self.disabled is not None or bucket is None or capture is None or torch.is_grad_enabled():
            self.eager_calls += 1
            return fn(ids)
        fingerprint = (_weights_fingerprint(module), ids.device, ids.dtype, tuple(ids.shape[1:]))
        entry = self._graphs.get((key, bucket))
        if entry is None or entry[0] != fingerprint:
            try:
                entry = self._capture(capture, fingerprint, ids, bucket, fn)
            except Exception as error:  # an op that cannot be captured, out of memory: stay correct, go eager
                self.disabled = f"{type(error).__name__}: {error}"
                self._graphs.clear()
                warnings.warn(f"cuda_graphs: capturing the text encoder failed, it runs eagerly from now on "
                              f"({self.disabled})", RuntimeWarning, stacklevel=2)
                self.eager_calls += 1
                return fn(ids)
            self._graphs[(key, bucket)] = entry
        _, static_in, static_out, replay = entry
        rows = ids.shape[0]
        static_in[:rows].copy_(ids)
        replay()
        self.replays += 1
        return tuple(tensor[:rows].clone() for tensor in static_out)

    def _capture(self, capture: Capture, fingerprint: tuple, ids: torch.Tensor, bucket: int, fn: Callable) -> tuple:
        import torch

        pad = bucket - ids.shape[0]
        static_in = torch.cat([ids, ids[:1].expand(pad, *ids.shape[1:])]) if pad else ids.clone()
        if capture is _capture_cuda:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()  # one pool: graphs never replay concurrently
            static_out, replay = _capture_cuda(fn, static_in, warmup=self.warmup, pool=self._pool)
        else:
            static_out, replay = capture(fn, static_in)
        return fingerprint, static_in, tuple(static_out), replay


def _capture_cuda(fn: Callable, static_in: torch.Tensor, *, warmup: int = 2, pool: Any = None) -> tuple:
    """Warm ``fn`` up on a side stream, then capture it into a CUDA graph (PyTorch's recipe)."""
    import torch

    device = static_in.device
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        static_out = fn(static_in)
    return static_out, graph.replay


def encoder_forward(
    graphs: GraphedForward, key: Hashable, model: Any, spec: EncoderSpec, *, eos_token_id: int,
    clip_skip: int | None = None,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``ids -> core.run_encoder(model, spec, ids, ...)`` through ``graphs``: the ``forward`` that
    ``core.encode_chunks`` / ``core.encode_texts`` take; one graph per (``key``, clip skip, bucket).

    Example:
        >>> import torch
        >>> from sdclip.conditioning.types import EncoderSpec
        >>> graphs = GraphedForward()
        >>> forward = encoder_forward(graphs, 0, cond.text_encoder, EncoderSpec(), eos_token_id=49407)
        >>> ids = torch.tensor([cond.tokenizer("a cat", padding="max_length").input_ids])
        >>> with torch.inference_mode():  # on the CPU: eager, the same tensors as run_encoder
        ...     hidden, pooled = forward(ids)
        >>> hidden.shape, graphs.status["eager_calls"]
        (torch.Size([1, 77, 128]), 1)
    """

    def run(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return run_encoder(model, spec, ids, eos_token_id=eos_token_id, clip_skip=clip_skip)

    return lambda ids: graphs((key, clip_skip or 0), ids, run, module=model)
