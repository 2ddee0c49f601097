"""Text conditioning for diffusers UNet pipelines: prompt text in, ``prompt_embeds`` and pooled out.

With the default options the tensors are exactly what ``StableDiffusionPipeline.encode_prompt`` (or,
for SDXL, ``StableDiffusionXLPipeline.encode_prompt``) computes (same tokens, same model call, same
dtype); on top of that sdclip caches repeated prompts, applies ``clip_skip`` to the negative prompt too,
and works with transformers 5.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._lru import DEFAULT_MAX_BYTES, LRUCache, check_cache_size
from ..errors import PromptError, PromptTypeError
from ..models.loading import LoadedTextEncoder, LoadedTextEncoders, LoadOptions
from ..models.mmdit import load_conditioning_encoders, load_files
from ..models.sources import DEFAULT_MODEL
from ..prompts.chunking import ChunkedPrompt, chunk_prompt
from ..prompts.tokens import PromptToken, prompt_tokens
from ..prompts.truncation import TruncationWarning
from .calls import clip_texts, encode_call, t5_device_of
from .cuda_graphs import GraphedForward
from .pipelines import pipeline_encoders
from .settings import EncodeSettings, resolve_settings
from .textual_inversion import expand_textual_inversion
from .types import SDXL_SPEC, Conditioning, EncoderSpec

__all__ = ["Conditioning", "EncoderSpec", "SDXL_SPEC", "TextConditioner", "TruncationWarning"]

if TYPE_CHECKING:
    import torch


class TextConditioner:
    """Encode prompts with CLIP text encoders into diffusers-ready conditioning.

    Args:
        encoders: loaded text encoders (one for SD 1.x/2.x, two for SDXL).
        specs: how each encoder's hidden states are taken (default: SD 1.x rules; ``SDXL_SPEC`` for both SDXL encoders).
        cache_size: how many encoded prompts to keep (per settings); 0 disables the cache.
        cache_bytes: the most bytes the cached tensors may hold (default 256 MiB).
        pipeline_takes_pooled: whether ``pipeline_kwargs`` includes the pooled pair.
        force_zeros_for_empty_prompt: ``encode``'s default for ``force_zeros`` (the SDXL pipeline
            setting of that name: a missing negative prompt becomes zeros).
        trainable: encode with gradients (no ``inference_mode``, no cache), so a loss can train the
            text encoders; their parameters must have ``requires_grad``. Default: inference.
        cuda_graphs: run the text encoders through CUDA graphs (one per batch size, captured on first
            use) on a CUDA device: batch-1 latency drops to a few launches. Same tensors as without
            (within the dtype's rounding where a batch is padded to its graph's size); on the CPU it
            changes nothing, and with ``trainable`` it runs eagerly. See ``cuda_graph_status``.
        family: ``"sd3"`` or ``"flux"`` for those pipelines (then ``encoders`` are the CLIP ones and ``t5``
            the T5 encoder, None for SD3 without it, whose part is zeros ``t5_width`` wide); None otherwise.

    One conditioner may be shared by threads: encodes run one at a time (the tokenizers are not
    thread-safe) and the cache only ever holds complete, checked entries.

    Example:
        >>> out = cond.encode(["a cat", "a dog"], "blurry", num_images_per_prompt=2)
        >>> out.prompt_embeds.shape  # the tiny test model is 128 wide; CLIP ViT-L/14 is 768
        torch.Size([4, 77, 128])
    """
    from .schedules import encode_schedule  # cond.encode_schedule(prompt, negative, steps=N): A1111 [a:b:when], [a|b]

    def __init__(
        self,
        encoders: Sequence[LoadedTextEncoder],
        *,
        specs: Sequence[EncoderSpec] | None = None,
        cache_size: int = 256,
        cache_bytes: int = DEFAULT_MAX_BYTES,
        pipeline_takes_pooled: bool = False,
        force_zeros_for_empty_prompt: bool = False,
        trainable: bool = False,
        cuda_graphs: bool = False,
        family: str | None = None,
        t5: LoadedTextEncoder | None = None,
        t5_width: int | None = None,
    ) -> None:
        if not encoders:
            raise PromptError("encoders: expected at least one text encoder")
        self.encoders = list(encoders)
        self.specs = list(specs) if specs is not None else [EncoderSpec()] * len(self.encoders)
        if len(self.specs) != len(self.encoders):
            raise PromptError(f"specs: expected one per encoder ({len(self.encoders)}), got {len(self.specs)}")
        if not isinstance(trainable, bool):
            raise PromptError(f"trainable: expected True or False, got {trainable!r}")
        self.pipeline_takes_pooled = pipeline_takes_pooled
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        self.trainable = trainable
        self._cache = LRUCache(check_cache_size(cache_size), max_bytes=cache_bytes)
        # one encode at a time: HF fast tokenizers change their truncation/padding state on every call
        self._lock = threading.RLock()
        self._embeddings: list[dict[str, int]] = [{} for _ in self.encoders]  # textual inversion: name -> vectors
        self._owns_models = False  # from_pretrained sets it: then embeddings may extend the models in place
        self._graphs = GraphedForward() if cuda_graphs else None
        self.family, self.t5, self.t5_width = family, t5, t5_width  # SD3 / Flux: see sdclip.conditioning.mmdit

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike = DEFAULT_MODEL,
        *,
        subfolder: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        local_files_only: bool | None = None,
        allow_pickle: bool = False,
        cache_size: int = 256,
        cache_bytes: int = DEFAULT_MAX_BYTES,
        cuda_graphs: bool = False,
        devices: dict[str, str | torch.device] | None = None,
        t5_tokenizer: str | os.PathLike | None = None,
    ) -> TextConditioner:
        """Load the text encoder(s) and tokenizer(s) from a hub id, CLIP folder, pipeline folder or checkpoint.

        SD3 / SD3.5 and Flux pipeline folders load CLIP and T5 (see ``sdclip.conditioning.mmdit``); an SD3
        folder whose ``text_encoder_3`` is null or absent gives zeros for T5, as diffusers. An SD3.5
        single file (keys under ``text_encoders.clip_l.transformer.``) needs ``t5_tokenizer`` when it holds T5.

        An SDXL pipeline folder (one with ``text_encoder_2``) or single-file SDXL checkpoint (keys under
        ``conditioner.embedders.1.model.``) gives both encoders with SDXL's rules: penultimate hidden
        states without the final layer norm, the pooled pair in ``pipeline_kwargs``, and the folder's
        ``force_zeros_for_empty_prompt`` (True for single files, as diffusers).

        Args:
            source: hub id (default ``openai/clip-vit-large-patch14``), local CLIP folder, diffusers
                pipeline folder, or single-file ``.safetensors`` SD / SDXL checkpoint.
            subfolder: in a pipeline folder, load this one encoder alone (``text_encoder`` or
                ``text_encoder_2``) with SD 1.x rules; default: every encoder the pipeline has.
            device: default CUDA when available, else CPU.
            dtype: default float16 on CUDA, float32 elsewhere.
            local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
            allow_pickle: accept ``.ckpt``/``.pt``/``.bin`` files, loaded with ``weights_only=True``.
            cache_size: how many encoded prompts to keep; 0 disables the cache.
            cache_bytes: the most bytes the cached tensors may hold (default 256 MiB).
            cuda_graphs: replay the encoders' forward from CUDA graphs on a CUDA device (see the class).
            devices: per-encoder devices, e.g. ``{"t5": "cpu"}`` keeps T5 on the CPU while CLIP runs on ``device``.
            t5_tokenizer: a folder with T5's tokenizer, for sources that bring none (single files).

        Raises:
            PromptError: ``cache_size`` or ``cache_bytes`` is not an integer >= 0 (checked before loading).

        Example:
            >>> import tempfile
            >>> folder = tempfile.mkdtemp()
            >>> pipe.save_pretrained(folder)  # a tiny SD 1.x pipeline folder
            >>> TextConditioner.from_pretrained(folder, device="cpu").encode("a cat").prompt_embeds.shape
            torch.Size([1, 77, 128])
        """
        check_cache_size(cache_size)
        check_cache_size(cache_bytes, "cache_bytes")
        options = LoadOptions(device, dtype, local_files_only, allow_pickle)
        loaded = load_conditioning_encoders(source, options, subfolder=subfolder, t5_tokenizer=t5_tokenizer,
                                            t5_device=t5_device_of(devices))  # fmt: skip
        conditioner = cls._from_loaded(loaded, cache_size=cache_size, cache_bytes=cache_bytes, cuda_graphs=cuda_graphs)
        conditioner._owns_models = True
        return conditioner

    @classmethod
    def _from_loaded(cls, loaded: LoadedTextEncoders, *, cache_size: int, cache_bytes: int = DEFAULT_MAX_BYTES,
                     trainable: bool = False, cuda_graphs: bool = False) -> TextConditioner:
        mmdit = loaded.family.name in ("sd3", "flux")
        takes_pooled = loaded.sdxl or mmdit
        return cls(
            loaded.encoders, specs=[loaded.family.spec] * len(loaded.encoders) if takes_pooled else None,
            cache_size=cache_size, cache_bytes=cache_bytes, trainable=trainable, cuda_graphs=cuda_graphs,
            pipeline_takes_pooled=takes_pooled, force_zeros_for_empty_prompt=loaded.sdxl and loaded.force_zeros_for_empty_prompt,
            family=loaded.family.name if mmdit else None, t5=loaded.t5, t5_width=loaded.t5_width,
        )  # fmt: skip

    @classmethod
    def from_pipeline(cls, pipe: Any, *, cache_size: int = 256, cache_bytes: int = DEFAULT_MAX_BYTES,
                      trainable: bool = False, cuda_graphs: bool = False) -> TextConditioner:
        """Use the text encoders and tokenizers of a loaded diffusers pipeline (shared, not copied).

        Works with ``StableDiffusionPipeline`` and the SDXL pipelines (base, refiner, img2img,
        inpaint); the SDXL rules and ``force_zeros_for_empty_prompt`` come from the pipeline. The
        pipeline's modules are never changed: ``load_textual_inversion`` works on copies.
        ``trainable=True`` encodes with gradients into the pipeline's encoders; ``cuda_graphs`` as in the class.
        ``cache_size`` and ``cache_bytes`` bound the prompt cache as in the constructor.

        Raises:
            ModelSourceError: the pipeline has a text encoder that is not CLIP (Flux, SD3).

        Example:
            >>> from sdclip.testing import tiny_sdxl_pipeline
            >>> cond = TextConditioner.from_pipeline(tiny_sdxl_pipeline())
            >>> cond.encode("a cat").prompt_embeds.shape
            torch.Size([1, 77, 320])
        """
        check_cache_size(cache_size)
        check_cache_size(cache_bytes, "cache_bytes")
        return cls._from_loaded(pipeline_encoders(pipe), cache_size=cache_size, cache_bytes=cache_bytes,
                                trainable=trainable, cuda_graphs=cuda_graphs)

    @classmethod
    def from_files(
        cls, *, clip_l: str | os.PathLike, clip_g: str | os.PathLike | None = None, t5: str | os.PathLike | None = None,
        family: Literal["sd3", "flux"] = "sd3", t5_tokenizer: str | os.PathLike | None = None,
        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
        devices: dict[str, str | torch.device] | None = None, cache_size: int = 256,
    ) -> TextConditioner:
        """SD3 / Flux encoders from standalone files as ComfyUI keeps them (``clip_l.safetensors``,
        ``clip_g.safetensors``, ``t5xxl_fp16.safetensors``, or one SD3.5 single file); configs from shapes, T5
        read straight into ``dtype``; ``t5_tokenizer`` (a folder) is required with ``t5``; no ``t5``: zeros for it
        (SD3). ``devices={"t5": "cpu"}`` keeps T5 on the CPU. Errors: see ``sdclip.models.mmdit.load_files``.
        """
        check_cache_size(cache_size)
        options = LoadOptions(device, dtype)
        t5_options = None if t5_device_of(devices) is None else LoadOptions(t5_device_of(devices), dtype)
        conditioner = cls._from_loaded(load_files(clip_l=clip_l, clip_g=clip_g, t5=t5, family=family, options=options,
                                                  t5_options=t5_options, t5_tokenizer=t5_tokenizer), cache_size=cache_size)
        conditioner._owns_models = True
        return conditioner

    @property
    def tokenizer(self) -> Any:
        """The first encoder's tokenizer."""
        return self.encoders[0].tokenizer

    @property
    def text_encoder(self) -> Any:
        """The first encoder's transformers model."""
        return self.encoders[0].model

    @property
    def device(self) -> torch.device:
        return self.encoders[0].model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoders[0].model.dtype

    def clear_cache(self) -> None:
        """Forget every cached encoding (done for you when the vocabulary changes); CUDA graphs stay."""
        self._cache.clear()

    @property
    def cuda_graph_status(self) -> dict | None:
        """None without ``cuda_graphs``; else ``{"graphs", "replays", "eager_calls", "disabled"}``: graphs
        captured, encoder calls that replayed one or ran eagerly (CPU, over 128 rows), why graphs stopped."""
        return None if self._graphs is None else self._graphs.status

    def _grad_context(self) -> contextlib.AbstractContextManager:
        import torch

        return torch.enable_grad() if self.trainable else torch.inference_mode()

    def _encode_texts(
        self, index: int, texts: list[str], settings: EncodeSettings, truncated: list[tuple[str, str]]
    ) -> dict[str | None, tuple]:
        """``core.encode_texts`` for encoder ``index`` through the cache (none when trainable); hold the lock."""
        return clip_texts(self, index, texts, settings, truncated)

    # -- tokens -------------------------------------------------------------------------------------

    def _chunk(self, index: int, text: str, settings: EncodeSettings) -> ChunkedPrompt:
        """``text`` in 77-token chunks for encoder ``index`` (textual-inversion tokens expanded)."""
        tokenizer = self.encoders[index].tokenizer
        text = expand_textual_inversion(text, self._embeddings[index], syntax=settings.syntax)
        return chunk_prompt(text, tokenizer, syntax=settings.syntax, truncate=settings.truncate)

    # -- public -------------------------------------------------------------------------------------

    def load_textual_inversion(
        self, path: str | os.PathLike, *, token: str | None = None, allow_pickle: bool = False
    ) -> list[str]:
        """Add a textual-inversion embedding; its name (default: the file stem, or the token a diffusers
        ``learned_embeds`` file names) can then be used in prompts.

        Models loaded by ``from_pretrained`` are extended in place. Models you passed to the constructor
        are never changed: the conditioner copies them (and their tokenizers) first.

        Args:
            path: A1111 ``.pt`` (needs ``allow_pickle``) or ``.safetensors``, diffusers ``learned_embeds.safetensors``,
                or an SDXL / SD3 file with ``clip_l`` and ``clip_g`` (SD3 / Flux: one-part files go to CLIP-L alone).
            token: the name to use in prompts instead of the default.
            allow_pickle: accept pickle files, loaded with ``torch.load(weights_only=True)``.

        Returns:
            The tokens added to the (first) tokenizer: ``[name, name_1, ...]``.

        Raises:
            EmbeddingError: unknown layout, a width that does not fit the encoder (both widths named),
                a name already in the vocabulary, or vectors for another number of encoders.

        Example:
            >>> import tempfile, torch
            >>> from safetensors.torch import save_file
            >>> path = tempfile.mkdtemp() + "/style.safetensors"
            >>> save_file({"emb_params": torch.randn(2, 128)}, path)  # an A1111 embedding of 2 vectors
            >>> mine = TextConditioner.from_pipeline(pipe)  # the pipeline's own modules stay unchanged
            >>> mine.load_textual_inversion(path, token="<my-style>")  # "style" is already a CLIP word
            ['<my-style>', '<my-style>_1']
        """
        from .textual_inversion import load_into_encoders

        with self._lock:
            added = load_into_encoders(
                self.encoders, self._embeddings, path, token=token, allow_pickle=allow_pickle,
                copy_models=not self._owns_models, family=self.family,
            )  # fmt: skip
            self._owns_models = True
            self.clear_cache()
        return added

    def parse(self, prompt: str, *, syntax: str = "plain", truncate: bool = True) -> list[PromptToken]:
        """The tokens the first encoder sees for ``prompt``: chunk, position, weight, truncation.

        BOS/EOS of every chunk are listed, padding is not; with ``truncate=True`` the tokens past the
        limit follow, marked ``truncated``.

        Example:
            >>> [(t.text, t.weight) for t in cond.parse("a (cat:1.5)", syntax="a1111")]
            [('<|startoftext|>', 1.0), ('a</w>', 1.0), ('cat</w>', 1.5), ('<|endoftext|>', 1.0)]
        """
        if not isinstance(prompt, str):
            raise PromptTypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        settings = resolve_settings(None, syntax, truncate, None)
        with self._lock:
            return prompt_tokens(self._chunk(0, prompt, settings), self.tokenizer)

    def parse_schedule(self, prompt: str, *, steps: int, syntax: str = "a1111",
                       truncate: bool = True) -> list[tuple[range, str, list[PromptToken]]]:
        """``parse`` per text of A1111's prompt editing / alternation: ``(denoising steps, text, tokens)`` for
        each schedule entry over ``steps`` steps (counted from 0, as ``callback_on_step_end`` does).

        Example:
            >>> [(list(r), text) for r, text, _ in cond.parse_schedule("a [cat:dog:1]", steps=3)]
            [([0, 1], 'a cat'), ([2], 'a dog')]
        """
        from ..prompts.schedules import ScheduleEntry, step_ranges
        from ..prompts.syntaxes import get_syntax

        schedule = get_syntax(syntax).schedule
        entries = schedule(prompt, steps) if schedule else (ScheduleEntry(steps, prompt),)
        return [(r, e.text, self.parse(e.text, syntax=syntax, truncate=truncate))
                for e, r in zip(entries, step_ranges(entries, steps), strict=True) if r]

    def encode(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | Literal[False] | None = None,
        *,
        prompt_2: str | Sequence[str] | None = None,
        negative_prompt_2: str | Sequence[str] | None = None,
        prompt_3: str | Sequence[str] | None = None,
        negative_prompt_3: str | Sequence[str] | None = None,
        max_sequence_length: int | None = None,
        num_images_per_prompt: int = 1,
        clip_skip: int | None = None,
        clip_skip_negative: Literal["same", "diffusers"] = "same",
        force_zeros: bool | None = None,
        syntax: str = "plain",
        truncate: bool = True,
        weighting: str | None = None,
    ) -> Conditioning:
        """Encode prompts (and negative prompts) into the tensors a diffusers pipeline takes.

        Args:
            prompt: one prompt or a list of prompts.
            negative_prompt: one for all, one per prompt, or None (the empty prompt, as diffusers; zeros
                when ``force_zeros`` applies; Flux: no negative). ``False``: no negative at all (no guidance):
                nothing is encoded for it and the negative tensors are None.
            prompt_3, negative_prompt_3: SD3: the texts for T5 (None or "": ``prompt`` / ``negative_prompt``).
            max_sequence_length: SD3 / Flux: T5's tokens (default 256 for SD3, 512 for Flux, as diffusers).
            prompt_2: SDXL / SD3: the text for the second encoder (OpenCLIP bigG; Flux: T5), one for all or one per
                prompt; None or "" means ``prompt`` (as diffusers).
            negative_prompt_2: SDXL: the negative text for the second encoder; None or "" means
                ``negative_prompt``.
            num_images_per_prompt: repeat each prompt's tensors this many times (as diffusers).
            clip_skip: diffusers' meaning: 1 uses the penultimate layer (A1111 calls that "Clip skip
                2"), through the final layer norm. SDXL already uses the penultimate layer without the
                norm, and 1 moves one layer further down (``hidden_states[-(clip_skip + 2)]``). Applied
                to every chunk. Does not change the pooled output.
            clip_skip_negative: ``"same"`` applies ``clip_skip`` to negative prompts too;
                ``"diffusers"`` ignores it for them, as diffusers' pipelines do.
            force_zeros: zeros, not the encoded empty prompt, as negative conditioning when
                ``negative_prompt`` and ``negative_prompt_2`` are both None. None: the pipeline's
                ``force_zeros_for_empty_prompt`` (SDXL: usually on; SD 1.x/2.x: off).
            syntax: how prompt text is read: ``"plain"`` (as diffusers: brackets are text),
                ``"a1111"`` (AUTOMATIC1111: ``(x)``, ``[x]``, ``(x:1.3)``, ``BREAK``) or ``"comfy"``
                (ComfyUI: ``(x)``, ``(x:1.3)``; ``[x]`` is text).
            truncate: True cuts prompts at 75 tokens (as diffusers); False encodes prompts of any
                length in 77-token chunks concatenated on the sequence axis.
            weighting: how weights reach the embeddings: ``"a1111"`` (scale, then restore each
                chunk's mean), ``"comfy"`` (move away from the empty prompt's encoding),
                ``"multiply"``; None picks the syntax's own.

        Returns:
            A ``Conditioning``; ``pipe(**result.pipeline_kwargs())`` runs the pipeline on it. Prompts
            and negative prompts are padded to the batch's largest number of chunks (over every
            encoder) with each encoder's encoding of the empty chunk (BOS, then EOS/padding), so the
            shapes always fit the pipeline. SDXL's pooled output comes from the first chunk. SD3 / Flux:
            as their ``encode_prompt`` (see ``sdclip.conditioning.mmdit``), T5 weighted as ``conditioning.t5`` says.

        Raises:
            PromptTypeError: a prompt item is not a string.
            PromptError: prompt and negative lists differ in length, ``prompt_2`` is given to a
                one-encoder model, an option is out of range, or a weight makes the conditioning
                infinite or NaN in the model's dtype (the message names the prompt and the weight).

        Example:
            >>> result = cond.encode("a photo of a cat", "blurry", clip_skip=1)
            >>> result.prompt_embeds.shape  # (1, 77, 768) for CLIP ViT-L/14; the tiny test model is 128 wide
            torch.Size([1, 77, 128])
            >>> sdxl.encode("a cat", prompt_2="oil painting").pooled_prompt_embeds.shape  # SDXL: (1, 1280); tiny: 160
            torch.Size([1, 160])
        """
        return encode_call(
            self, prompt, negative_prompt, prompt_2=prompt_2, negative_prompt_2=negative_prompt_2, prompt_3=prompt_3,
            negative_prompt_3=negative_prompt_3, num_images_per_prompt=num_images_per_prompt, clip_skip=clip_skip,
            clip_skip_negative=clip_skip_negative, force_zeros=force_zeros, syntax=syntax, truncate=truncate,
            weighting=weighting, max_sequence_length=max_sequence_length,
        )  # fmt: skip

