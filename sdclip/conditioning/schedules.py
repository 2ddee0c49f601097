"""Prompt editing and alternation inside diffusers pipelines: conditionings that change during sampling.

:func:`encode_schedule` reads each prompt's schedule (A1111's ``[from:to:when]`` and ``[a|b]``, from the
syntax's :attr:`~sdclip.prompts.parsed.Syntax.schedule`), encodes every distinct text once in one batch
(so all conditionings share one shape), and returns a :class:`ScheduledConditioning`. Its
:meth:`~ScheduledConditioning.callback` is a diffusers ``callback_on_step_end`` that swaps
``prompt_embeds`` (and SDXL's ``add_text_embeds``) between steps, with and without classifier-free
guidance and for any ``num_images_per_prompt``.

Which conditioning a step uses is A1111's rule (``reconstruct_cond_batch(c, self.step)`` in its
``CFGDenoiser``, whose ``self.step`` counts denoiser calls from 0): step ``i`` (diffusers' callback index,
from 0) uses the first entry whose end step (counted from 1, as the schedule writes it) is ``>= i``. So
``[cat:dog:3]`` gives "cat" at steps 0, 1, 2, 3 and "dog" from step 4, and ``[cat|dog]`` gives cat, cat,
dog, cat, dog, ... exactly as A1111 renders them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import PromptError
from ..prompts.lists import second_prompts, validate_prompts
from ..prompts.syntaxes import get_syntax

if TYPE_CHECKING:
    import torch

    from .types import Conditioning

__all__ = ["ScheduledConditioning", "encode_schedule", "texts_by_step"]

_SIDES = ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2")


@dataclass(frozen=True)
class ScheduledConditioning:
    """The conditionings of scheduled prompts, and the steps at which each takes over.

    Attributes:
        steps: the number of sampling steps the schedule was computed for (``num_inference_steps``).
        ends: per conditioning, its last step as the schedule writes it (from 1; the last is ``steps``).
        starts: per conditioning, the first denoising step (diffusers' callback index, from 0) that uses it.
        texts: per conditioning, ``{"prompt": (...), "negative_prompt": (...), ...}``: the texts encoded.
        conditionings: one :class:`~sdclip.conditioning.types.Conditioning` per entry, all the same shape;
            neighbouring entries always differ in some text.

    Example:
        >>> schedule = cond.encode_schedule("a [cat:dog:2] in snow", "blurry", steps=4)
        >>> [(start, texts["prompt"]) for start, texts in zip(schedule.starts, schedule.texts)]
        [(0, ('a cat in snow',)), (3, ('a dog in snow',))]
        >>> images = pipe(**schedule.pipeline_kwargs(), num_inference_steps=4, output_type="np").images
    """

    steps: int
    ends: tuple[int, ...]
    starts: tuple[int, ...]
    texts: tuple[dict[str, tuple[str, ...]], ...]
    conditionings: tuple[Conditioning, ...]

    def index_at(self, step: int) -> int:
        """Which conditioning denoising step ``step`` (from 0) uses: the first whose end is ``>= step``."""
        for index, end in enumerate(self.ends):
            if step <= end:
                return index
        return len(self.ends) - 1

    def conditioning_at(self, step: int) -> Conditioning:
        """The conditioning denoising step ``step`` (from 0) uses."""
        return self.conditionings[self.index_at(step)]

    @property
    def tensor_inputs(self) -> list[str]:
        """What to pass as ``callback_on_step_end_tensor_inputs``: ``prompt_embeds`` (and SDXL's ``add_text_embeds``)."""
        pooled = self.conditionings[0].pipeline_takes_pooled
        return ["prompt_embeds", "add_text_embeds"] if pooled else ["prompt_embeds"]

    def callback(self) -> Callable[..., dict] | None:
        """A ``callback_on_step_end`` that swaps the conditioning between steps; None when nothing changes.

        Pass it with ``callback_on_step_end_tensor_inputs=schedule.tensor_inputs`` (or use
        :meth:`pipeline_kwargs`, which does both). After step ``i`` it returns the tensors of step ``i + 1``
        when they differ (else nothing): ``cat([negative, positive])`` under classifier-free guidance (as the
        pipeline holds them), each row repeated when the pipeline's batch is a multiple of the
        conditioning's (``num_images_per_prompt`` passed to the pipeline), on the pipeline's device and dtype.
        """
        if len(self.conditionings) == 1:
            return None
        built: dict[tuple, dict[str, torch.Tensor]] = {}

        def on_step_end(pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            now, after = self.index_at(i), self.index_at(i + 1)
            if now == after:
                return {}
            current = callback_kwargs.get("prompt_embeds")
            if current is None:
                raise PromptError(
                    "callback_on_step_end_tensor_inputs: the schedule's callback needs 'prompt_embeds'; pass "
                    f"callback_on_step_end_tensor_inputs={self.tensor_inputs}"
                )
            guided = bool(getattr(pipe, "do_classifier_free_guidance", False))
            key = (after, guided, tuple(current.shape), current.dtype, current.device)
            if key not in built:
                built[key] = _pipeline_tensors(self.conditionings[after], current, guided,
                                               want_pooled="add_text_embeds" in callback_kwargs)
            return dict(built[key])

        return on_step_end

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a pipeline call: the first conditioning's tensors and, when the
        conditioning changes, the callback and its tensor inputs."""
        kwargs: dict[str, Any] = self.conditionings[0].pipeline_kwargs()
        callback = self.callback()
        if callback is not None:
            kwargs["callback_on_step_end"] = callback
            kwargs["callback_on_step_end_tensor_inputs"] = self.tensor_inputs
        return kwargs


def _pipeline_tensors(cond: Conditioning, current: torch.Tensor, guided: bool, *, want_pooled: bool) -> dict:
    """``cond``'s tensors laid out as the pipeline holds them (CFG order, rows, device, dtype)."""
    import torch

    rows = current.shape[0] // 2 if guided else current.shape[0]
    own = cond.prompt_embeds.shape[0]
    if rows % own or current.shape[1:] != cond.prompt_embeds.shape[1:]:
        raise PromptError(
            f"prompt_embeds: the pipeline holds {tuple(current.shape)}, which does not fit the schedule's "
            f"conditioning {tuple(cond.prompt_embeds.shape)}; run the pipeline with the tensors from "
            "schedule.pipeline_kwargs()"
        )
    repeat = rows // own

    def laid_out(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        positive = positive.repeat_interleave(repeat, dim=0)
        both = torch.cat([negative.repeat_interleave(repeat, dim=0), positive]) if guided else positive
        return both.to(device=current.device, dtype=current.dtype)

    out = {"prompt_embeds": laid_out(cond.prompt_embeds, cond.negative_prompt_embeds)}
    if want_pooled:
        out["add_text_embeds"] = laid_out(cond.pooled_prompt_embeds, cond.negative_pooled_prompt_embeds)
    return out


def texts_by_step(texts: Sequence[str], steps: int, *, syntax: str = "a1111") -> list[tuple[int, tuple[str, ...]]]:
    """The union of the schedules of ``texts``: ``(end step, the text of each at that end)``, merged where
    nothing changes. A syntax without schedules gives one entry.

    Example:
        >>> texts_by_step(["a [cat:dog:2]", "[red|blue] hat"], 4)
        [(1, ('a cat', 'red hat')), (2, ('a cat', 'blue hat')), (3, ('a dog', 'red hat')), (4, ('a dog', 'blue hat'))]
    """
    schedule = get_syntax(syntax).schedule
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise PromptError(f"steps: expected an integer >= 1 (the pipeline's num_inference_steps), got {steps!r}")
    if schedule is None:
        return [(steps, tuple(texts))]
    schedules = [schedule(text, steps) for text in texts]
    ends = sorted({entry.end for entries in schedules for entry in entries})
    merged: list[tuple[int, tuple[str, ...]]] = []
    for end in ends:
        at = tuple(next(entry.text for entry in entries if entry.end >= end) for entries in schedules)
        if merged and merged[-1][1] == at:
            merged[-1] = (end, at)  # the same texts go on: one conditioning, the later end
        else:
            merged.append((end, at))
    return merged


def _slice_rows(cond: Conditioning, start: int, stop: int) -> Conditioning:
    tensors = {f.name: getattr(cond, f.name)[start:stop].clone() for f in fields(cond)
               if f.name in cond.tensors()}  # fmt: skip
    return replace(cond, **tensors, prompt_chunks=cond.prompt_chunks[start:stop],
                   negative_chunks=cond.negative_chunks[start:stop])


def encode_schedule(
    conditioner: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = None,
    *,
    steps: int,
    prompt_2: str | Sequence[str] | None = None,
    negative_prompt_2: str | Sequence[str] | None = None,
    num_images_per_prompt: int = 1,
    syntax: str = "a1111",
    **options: Any,
) -> ScheduledConditioning:
    """Encode prompts whose text changes during sampling; also ``TextConditioner.encode_schedule`` (this
    function is the method: ``cond.encode_schedule(prompt, negative_prompt, steps=N, ...)``).

    Every prompt and negative prompt (and SDXL's ``prompt_2`` / ``negative_prompt_2``) is scheduled for
    ``steps`` steps; the union of their change points splits sampling into entries, and each entry's texts
    are encoded with ``conditioner.encode`` (one call for all entries, so each distinct text is encoded
    once and every entry has the same shape). ``options`` are ``encode``'s (``clip_skip``, ``truncate``,
    ``weighting``, ``force_zeros``, ...).

    Raises:
        PromptError: ``steps`` is not an integer >= 1, or an ``encode`` option is invalid.

    Example:
        >>> schedule = encode_schedule(cond, ["[cat|dog]"], steps=3)
        >>> schedule.ends, schedule.starts
        ((1, 2, 3), (0, 2, 3))
    """
    prompts, negatives = validate_prompts(prompt, negative_prompt)
    sides: dict[str, list[str] | None] = {
        "prompt": prompts,
        "negative_prompt": negatives if negative_prompt is not None else None,
        "prompt_2": second_prompts(prompt_2, prompts, "prompt_2") if prompt_2 is not None else None,
        "negative_prompt_2": (second_prompts(negative_prompt_2, negatives, "negative_prompt_2")
                              if negative_prompt_2 is not None else None),
    }  # fmt: skip
    names = [name for name in _SIDES if sides[name] is not None]
    flat = [text for name in names for text in sides[name]]
    entries = texts_by_step(flat, steps, syntax=syntax)
    batch = {name: [] for name in names}
    texts = []
    for _, at in entries:
        per_side, offset = {}, 0
        for name in names:
            count = len(sides[name])
            per_side[name] = at[offset : offset + count]
            batch[name] += per_side[name]
            offset += count
        texts.append(per_side)
    encoded = conditioner.encode(
        batch["prompt"], batch.get("negative_prompt"), prompt_2=batch.get("prompt_2"),
        negative_prompt_2=batch.get("negative_prompt_2"), num_images_per_prompt=num_images_per_prompt,
        syntax=syntax, **options,
    )  # fmt: skip
    rows = len(prompts) * num_images_per_prompt
    conditionings = tuple(_slice_rows(encoded, k * rows, (k + 1) * rows) for k in range(len(entries)))
    ends = tuple(end for end, _ in entries)
    starts = (0, *(end + 1 for end in ends[:-1]))
    return ScheduledConditioning(steps, ends, starts, tuple(texts), conditionings)
