"""Hugging Face transformers integration: use flash_attn_c as a model's attention implementation.

    import transformers
    from flash_attn_c.integrations.transformers import register

    name = register()                                   # "fa_c"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=name)

``register()`` adds two functions to transformers' global registries under one name:

- ``AttentionInterface``: :func:`attention_forward`, called by every attention layer with
  ``(module, query, key, value, attention_mask, dropout, scaling, **kwargs)``;
- ``AttentionMaskInterface``: :func:`attention_mask`, called once per forward by
  ``create_causal_mask`` & co. Without it transformers builds no mask at all for an unknown name
  and padding would be silently ignored.

Why the name is ``"fa_c"`` and not ``"flash_attn_c"``: transformers treats any
``attn_implementation`` containing ``"flash"`` as a FlashAttention request
(``is_flash_attention_requested``) and, for a name that is not ``flash_attention_{2,3,4}``, tries to
download it as a Hub kernel (``lazy_import_flash_attention`` -> ``load_and_register_attn_kernel``).
Names containing ``"sdpa"``/``"flex_attention"`` get sdpa/flex dispatch checks, and ``"paged|"``
and ``"org/repo"`` forms are continuous-batching and Hub-kernel syntax. ``register`` refuses all of
them.

Semantics (the same as transformers' own FlashAttention-2 integration, ``integrations/flash_attention.py``):

- Layout: models pass ``(b, h, s, d)`` views; we hand ``(b, s, h, d)`` views to the kernels (no
  copy) and return ``(b, s, h, d)``. GQA/MQA is native (no K/V repeat).
- Causal masks are bottom-right aligned, which is exactly what a KV-cache step needs (the ``sq``
  new queries are the last ``sq`` of the ``sk`` keys).
- ``sliding_window=w`` (transformers: a query sees the ``w`` most recent keys, itself included;
  ``masking_utils.sliding_window_overlay``: ``kv_idx > q_idx - w``) maps to
  ``window_size=(w - 1, 0)`` for causal layers, ``(w - 1, w - 1)`` for bidirectional ones, as
  transformers' FlashAttention path does.
- ``softcap`` (Gemma 2) is applied to the scaled scores before masking and softmax.
- ``dropout`` is applied only while ``module.training``.
- A 2-D padding mask is handled by unpad -> varlen -> pad (``flash_attn_c.bert_padding``). In
  causal layers padding queries give zeros; in non-causal layers (encoders, cross-attention) the
  mask removes keys only and every query is computed, as with transformers' sdpa masks.
- Packed sequences (no KV cache): ``cu_seq_lens_q/k`` (+ ``max_length_q/k``) kwargs, or
  ``position_ids`` that restart: a new sequence starts at each row's first token and wherever the
  position does not increase by exactly one (transformers' sdpa mask rule). In eager mode every
  batch size is handled; while compiling only batch size 1 (transformers' FlashAttention path
  handles only that one at all), because telling packed rows apart needs a host sync.
- fp32 activations on CUDA (e.g. fp32 LayerNorm outputs in PEFT) are cast to the autocast dtype,
  or to the model's fp16/bf16 Linear weight dtype, as transformers does for FlashAttention; an fp32
  model on CUDA raises (the CUDA kernels are fp16/bf16 only). On CPU nothing is cast: the C
  backend computes fp32, fp16 and bf16 directly.
- Mask patterns the kernels cannot express (chunked attention, block-wise bidirectional image
  tokens, custom ``or_mask_function`` overlays, a 4-D mask passed by the user) are not dropped:
  the mask function then returns transformers' 4-D sdpa mask and the attention function computes
  that layer with torch SDPA (or plain math when ``softcap`` is set), warning once.

torch.compile (fullgraph=True works, tested): the dense, ``cu_seq_lens`` and 4-D paths have no host
sync. A 2-D padding mask and ``position_ids`` packing need data-dependent sizes, so while
compiling they switch to static-shape formulations: padding runs every row as two varlen
sequences (its real tokens, then its padding tokens, which see only each other and are zeroed);
packing (batch 1) gets one cumulative-length entry per token, the sequences after the last real
one being empty, with ``max_seqlen`` = the row length. That last formulation makes the GPU grid
cover ``seqlen`` (mostly empty) sequences: for packed training under ``torch.compile`` pass
``cu_seq_lens_q/k`` and integer ``max_length_q/k`` instead
(``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``). Rows of a batch larger than 1 are
never treated as packed while compiling: pass ``cu_seq_lens`` there too.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers import masking_utils
from transformers.masking_utils import AttentionMaskInterface

import flash_attn_c
from flash_attn_c.bert_padding import index_first_axis, pad_input, unpad_input

__all__ = ["DEFAULT_NAME", "register", "attention_forward", "attention_mask"]

DEFAULT_NAME = "fa_c"

# Substrings transformers gives a meaning to inside an attn_implementation string (see module doc).
_RESERVED = ("flash", "sdpa", "flex_attention", "eager", "paged", "|", "/", ":", "@")

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a UserWarning the first time ``key`` is seen (never while compiling)."""
    if key in _warned or torch.compiler.is_compiling():
        return
    _warned.add(key)
    warnings.warn(message, stacklevel=3)


def register(name: str = DEFAULT_NAME) -> str:
    """Register flash_attn_c with transformers and return the ``attn_implementation`` to use.

    Registers :func:`attention_forward` in ``AttentionInterface`` and :func:`attention_mask` in
    ``AttentionMaskInterface`` (class-wide, so every model sees them). Idempotent.

    Args:
        name: registry key; must not contain a substring transformers interprets
            (``flash``, ``sdpa``, ``flex_attention``, ``eager``, ``paged``, ``|``, ``/``, ``:``, ``@``).

    Returns:
        ``name``, to pass as ``attn_implementation=`` or to ``model.set_attn_implementation``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register(): name must be a non-empty string, got {name!r}")
    bad = [s for s in _RESERVED if s in name.lower()]
    if bad:
        raise ValueError(
            f"register(): attn_implementation name {name!r} contains {bad}, which transformers interprets "
            "(e.g. names containing 'flash' are treated as FlashAttention/Hub-kernel requests); choose another name"
        )
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, attention_mask)
    return name


# ----------------------------------------------------------------------------------------------
# Mask function
# ----------------------------------------------------------------------------------------------


# Code objects of transformers' mask building blocks. Compared by identity, which also works
# while Dynamo traces (there ``__qualname__`` and ``__closure__`` are not available).
_AND_CODE = masking_utils.and_masks().__code__
_SLIDING_CODES = (
    masking_utils.sliding_window_overlay(1).__code__,
    masking_utils.sliding_window_bidirectional_overlay(1).__code__,
)
_PACKED_CODE = masking_utils.packed_sequence_mask_function(torch.zeros(1, 1)).__code__


def _closure_vars(fn: Callable) -> dict[str, Any] | None:
    """Free variables of a closure by name; None when they cannot be read (under Dynamo: there
    ``__closure__`` may be a traced object that is truthy but cannot be iterated, and touching it
    broke fullgraph compiles of sliding-window models given a padding mask)."""
    if torch.compiler.is_compiling():
        return None
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None)
    if code is None or (code.co_freevars and not cells):
        return None
    return {n: c.cell_contents for n, c in zip(code.co_freevars, cells or ())}


def _mask_is_expressible(mask_function: Callable, config: Any, use_vmap: bool) -> bool:
    """True when ``mask_function`` is a pattern our kernels reproduce from the attention kwargs.

    Accepted: causal, bidirectional, and ``and_masks`` of those with the config's own sliding
    window overlay and/or the packed-sequence overlay (packing reaches the attention function as
    ``position_ids``). Rejected: ``or_masks``, chunked and block-wise overlays, windows other than
    ``config.sliding_window``, lambdas and user functions.

    While Dynamo traces, closures cannot be opened: an ``and_masks`` is then accepted when no
    custom overlay was given (``use_vmap`` is False) and the model has no chunked attention.
    """
    if mask_function is masking_utils.causal_mask_function:
        return True
    if mask_function is masking_utils.bidirectional_mask_function:
        return True
    code = getattr(mask_function, "__code__", None)
    if code is _PACKED_CODE:
        return True
    if code is _AND_CODE:
        free = _closure_vars(mask_function)
        if free is None:
            return not use_vmap and getattr(config, "attention_chunk_size", None) is None
        parts = free.get("mask_functions", ())
        return len(parts) > 0 and all(_mask_is_expressible(f, config, use_vmap) for f in parts)
    if code in _SLIDING_CODES:
        free = _closure_vars(mask_function)
        window = free.get("sliding_window") if free is not None else None
        return window is not None and window == getattr(config, "sliding_window", None)
    return False


def attention_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable = masking_utils.causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """Mask function registered in ``AttentionMaskInterface``.

    Returns:
        - ``None`` when there is no padding (causality and windows come from the attention kwargs);
        - the 2-D bool padding mask ``(b, kv_length)`` when there is padding;
        - a 4-D bool mask ``(b, 1, q_length, kv_length)`` (transformers' sdpa mask) when the
          pattern cannot be expressed by our kernels; :func:`attention_forward` then falls back to
          SDPA/math for that layer.
    """
    expressible = _mask_is_expressible(mask_function, kwargs.get("config"), bool(kwargs.get("use_vmap", False)))
    if expressible and attention_mask is None:
        seen = _static_cache_seen(q_length, kv_length, q_offset, kv_offset)
        if seen is None:
            return None  # every key slot holds a token: the kernels' causal flag does the rest
        if seen > 0:  # the padding path drops the slots past `seen`
            return torch.ones(batch_size, seen, dtype=torch.bool, device=kwargs.get("device", "cpu"))
        # compiling over a static cache: transformers' 4-D mask, below
    if not expressible or attention_mask is None:
        kwargs.pop("allow_is_causal_skip", None)
        kwargs.pop("allow_is_bidirectional_skip", None)
        return masking_utils.sdpa_mask(
            batch_size=batch_size,
            q_length=q_length,
            kv_length=kv_length,
            q_offset=q_offset,
            kv_offset=kv_offset,
            mask_function=mask_function,
            attention_mask=attention_mask,
            allow_is_causal_skip=False,
            allow_is_bidirectional_skip=False,
            **kwargs,
        )
    # The 2-D mask covers past + current tokens; the keys are its last kv_length columns.
    attention_mask = attention_mask[:, -kv_length:]
    # No padding at all: let the kernels' causal flag do the work (this check syncs with the
    # device, so it is skipped while compiling; the padding path then runs with no padding).
    if (
        not torch.compiler.is_compiling()
        and attention_mask.shape[1] == kv_length
        and bool(attention_mask.all())
    ):
        return None
    return attention_mask


def _static_cache_seen(q_length: int, kv_length: int, q_offset: Any, kv_offset: int) -> int | None:
    """Without a padding mask: None when every key slot holds a token (no cache, dynamic caches,
    a full static cache), else the tokens seen so far: a static cache hands over its whole
    buffer (kv_length slots) while only q_offset + q_length are filled, and the rest must not be
    attended to. Reading a static layer's tensor q_offset is one host sync; while compiling it
    is not read and 0 is returned (the caller then uses transformers' 4-D mask)."""
    if isinstance(q_offset, int):
        seen = q_offset + q_length
    elif torch.compiler.is_compiling():
        return 0
    else:
        seen = int(q_offset) + q_length
    return None if seen >= kv_offset + kv_length else seen


# ----------------------------------------------------------------------------------------------
# Attention function
# ----------------------------------------------------------------------------------------------


def _window_size(sliding_window: int | None, causal: bool) -> tuple[int, int]:
    """transformers' ``sliding_window`` (keys seen, the query itself included) -> ``window_size``."""
    if sliding_window is None or sliding_window <= 0:
        return (-1, -1)
    left = int(sliding_window) - 1
    return (left, 0 if causal else left)


def _layer_window(module: torch.nn.Module, sliding_window: int | None, causal: bool) -> tuple[int, int]:
    """The layer's ``window_size``. :func:`attention_mask` accepts a sliding-window overlay only when
    its window is ``config.sliding_window`` (cw), so the mask's own window is the truth:
    causal ``kv > q - cw`` is ``(cw - 1, 0)``, bidirectional ``|q - kv| <= cw`` is ``(cw, cw)``.
    Models do not agree on what they pass as ``sliding_window`` for it: ModernBERT passes cw + 1,
    T5Gemma's encoder and decoders run with ``is_causal=False`` pass cw (the kwarg alone read as
    "keys seen" made their windows one key narrower on each side). A kwarg of cw or cw + 1
    therefore means the mask's window; other values (or no config) keep the kwarg's reading,
    :func:`_window_size`. No kwarg means no window: ``module.sliding_window`` is not a fallback
    (Exaone 4 sets it on its full-attention layers too); so Qwen2-MoE / PhiMoE, which build a
    sliding mask but pass no window, lose it here as in transformers' FlashAttention path
    (docs/transformers.md)."""
    if sliding_window is None or sliding_window <= 0:
        return (-1, -1)
    cw = getattr(getattr(module, "config", None), "sliding_window", None)
    if isinstance(cw, int) and not isinstance(cw, bool) and cw > 0 and sliding_window in (cw, cw + 1):
        return (cw - 1, 0) if causal else (cw, cw)
    return _window_size(sliding_window, causal)


def _kernel_dtype(query: torch.Tensor, module: torch.nn.Module) -> torch.dtype | None:
    """dtype to cast fp32 q/k/v to before calling the CUDA kernels; None = no cast.

    Mirrors transformers' ``get_target_dtype`` for FlashAttention: autocast dtype, else the dtype
    of the module's Linear weights. On CPU the C backend computes fp32 directly: no cast.
    """
    if query.dtype != torch.float32 or query.device.type != "cuda":
        return None
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "_is_quantized") and getattr(config, "dtype", None) in (
        torch.float16,
        torch.bfloat16,
    ):
        return config.dtype
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear) and layer.weight.dtype in (torch.float16, torch.bfloat16):
            return layer.weight.dtype
    raise ValueError(
        "flash_attn_c attention on CUDA computes in float16/bfloat16, but this model runs in float32: "
        "load it with dtype=torch.bfloat16 (or float16), or run it under torch.autocast('cuda', dtype=torch.bfloat16)"
    )


def _segments_from_position_ids(
    position_ids: torch.Tensor, b: int, s: int, static: bool
) -> tuple[torch.Tensor, int] | None:
    """Sequences packed in rows, from ``position_ids`` (1 or b, s).

    A sequence starts at each row's first column and wherever the position does not increase by
    exactly one (as transformers' ``find_packed_sequence_indices`` decides for the sdpa mask).

    Returns:
        ``(cu_seqlens int32, max_seqlen)`` over the flattened ``b * s`` tokens, or None when (in
        eager mode) no row holds more than one sequence. ``static=True`` (while compiling, used
        for b == 1) never syncs: ``cu_seqlens`` has ``b * s + 1`` entries, the sequences after
        the last real one being empty, and ``max_seqlen = s``.
    """
    pos = position_ids.reshape(-1, s)
    if pos.shape[0] != b:
        pos = pos.expand(b, s)
    start = torch.ones(b, s, dtype=torch.bool, device=pos.device)
    start[:, 1:] = (pos[:, 1:] - pos[:, :-1]) != 1
    total = b * s
    if not static:
        if not bool(start[:, 1:].any()):
            return None
        starts = start.reshape(-1).nonzero().reshape(-1).to(torch.int32)
        cu = torch.cat([starts, torch.full((1,), total, dtype=torch.int32, device=pos.device)])
        return cu, int((cu[1:] - cu[:-1]).max())
    seg = torch.cumsum(start.reshape(-1).to(torch.int64), 0) - 1  # sequence index of each token
    counts = torch.zeros(total, dtype=torch.int32, device=pos.device).index_add(
        0, seg, torch.ones(total, dtype=torch.int32, device=pos.device)
    )
    cu = F.pad(torch.cumsum(counts, 0, dtype=torch.int32), (1, 0))
    return cu, s


def _padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, static: bool, fa_kwargs: dict
) -> torch.Tensor:
    """Attention for a 2-D padding mask over the keys.

    q (b, sq, h, d), k/v (b, sk, hk, d), mask (b, L) bool/int, 1 = real token. Causal
    (decoder self-attention): the mask covers past + current tokens, the queries are its last sq
    columns, and padding queries get zeros. Not causal (encoder self-attention, cross-attention):
    the mask only removes keys and every query is computed, as with transformers' sdpa masks.
    Returns (b, sq, h, d).
    """
    b, sq, h, d = q.shape
    mask = mask.to(torch.bool)
    if k.shape[1] > mask.shape[1]:
        # Static caches hand over more key slots than tokens seen so far: drop the unused ones.
        k, v = k[:, : mask.shape[1]], v[:, : mask.shape[1]]
    elif mask.shape[1] > k.shape[1]:
        mask = mask[:, -k.shape[1] :]
    sk, hk = k.shape[1], k.shape[2]
    # Windowed non-causal self-attention (ModernBERT-style bidirectional windows) unpads its
    # queries with the key mask too: with sq real queries over sk = sq real keys the bottom-right
    # window stays where transformers puts it; with every query kept, right padding shifted it.
    windowed_self = not fa_kwargs["causal"] and tuple(fa_kwargs["window_size"]) != (-1, -1) and sq == sk
    if fa_kwargs["causal"] or windowed_self:
        mask_q = mask[:, -sq:]
    else:
        mask_q = torch.ones(b, sq, dtype=torch.bool, device=mask.device)
    if static:
        return _padded_attention_static(q, k, v, mask, mask_q, fa_kwargs)

    k_unpad, indices_k, cu_k, max_k, _ = unpad_input(k, mask)
    v_unpad = index_first_axis(v.reshape(b * sk, hk, v.shape[-1]), indices_k)
    if sq == sk and (fa_kwargs["causal"] or windowed_self):
        q_unpad = index_first_axis(q.reshape(b * sq, h, d), indices_k)
        indices_q, cu_q, max_q = indices_k, cu_k, max_k
    else:
        q_unpad, indices_q, cu_q, max_q, _ = unpad_input(q, mask_q)
    out = flash_attn_c.flash_attn_varlen_func(
        q_unpad, k_unpad, v_unpad, cu_q, cu_k, int(max_q), int(max_k), **fa_kwargs
    )
    return pad_input(out, indices_q, b, sq)


def _padded_attention_static(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, mask_q: torch.Tensor, fa_kwargs: dict
) -> torch.Tensor:
    """Padding without data-dependent shapes (for torch.compile).

    Each row is stably reordered so its real tokens come first, then the flattened batch is run
    as 2*b varlen sequences: row i's real tokens, then row i's padding tokens. Real queries see
    exactly the real keys of their row (same result as unpad); padding queries see only padding
    keys, and their outputs are replaced by zeros, so no gradient flows through them.
    """
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    dev = q.device
    order_k = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (b, sk) real first
    order_q = torch.argsort((~mask_q).to(torch.int8), dim=1, stable=True)  # (b, sq)
    k_s = torch.take_along_dim(k, order_k[:, :, None, None], dim=1)
    v_s = torch.take_along_dim(v, order_k[:, :, None, None], dim=1)
    q_s = torch.take_along_dim(q, order_q[:, :, None, None], dim=1)

    def cu(lengths: torch.Tensor, s: int) -> torch.Tensor:
        base = torch.arange(b, dtype=torch.int32, device=dev) * s
        inner = torch.stack([base, base + lengths], dim=1).reshape(-1)
        return torch.cat([inner, torch.full((1,), b * s, dtype=torch.int32, device=dev)])

    cu_q = cu(mask_q.sum(1, dtype=torch.int32), sq)
    cu_k = cu(mask.sum(1, dtype=torch.int32), sk)
    out_s = flash_attn_c.flash_attn_varlen_func(
        q_s.reshape(b * sq, h, d),
        k_s.reshape(b * sk, hk, k.shape[-1]),
        v_s.reshape(b * sk, hk, v.shape[-1]),
        cu_q,
        cu_k,
        sq,
        sk,
        **fa_kwargs,
    ).reshape(b, sq, h, -1)
    inverse = torch.argsort(order_q, dim=1)
    out = torch.take_along_dim(out_s, inverse[:, :, None, None], dim=1)
    return torch.where(mask_q[:, :, None, None], out, torch.zeros((), dtype=out.dtype, device=dev))


def _fallback_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    dropout_p: float,
    scaling: float | None,
    softcap: float,
) -> torch.Tensor:
    """A layer whose mask our kernels cannot express: torch SDPA, or math when softcap is set.

    query (b, h, sq, d), key/value (b, hk, sk, d), mask (b or 1, 1 or h, sq, sk) bool (True =
    attend) or additive float. Returns (b, sq, h, d).
    """
    _warn_once(
        "fallback",
        "flash_attn_c: this model builds an attention mask pattern the kernels cannot express "
        "(chunked / block-wise / custom overlay, or a 4-D mask); those layers run with torch SDPA instead",
    )
    groups = query.shape[1] // key.shape[1]
    if softcap == 0.0:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout_p, scale=scaling, enable_gqa=groups > 1
        )
        return out.transpose(1, 2)
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scale
    scores = softcap * torch.tanh(scores / softcap)
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(query.dtype)
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(probs, value).transpose(1, 2)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention function registered in ``AttentionInterface``.

    Args:
        module: the calling attention layer (``is_causal``, ``training`` and its Linear dtype are read).
        query: (b, h, sq, d). key/value: (b, hk, sk, d) (value head dim may be smaller than d).
        attention_mask: what :func:`attention_mask` returned: None, a 2-D padding mask (b, L),
            or a 4-D mask (fallback path).
        dropout: attention dropout probability, used only while ``module.training``.
        scaling: softmax scale (default ``d ** -0.5``).
        sliding_window: the layer's window as the model passes it (None = unlimited); read
            against ``config.sliding_window`` (:func:`_layer_window`).
        softcap: Gemma-2 style logit soft-capping (None or 0 = off).
        is_causal: overrides ``module.is_causal``.
        **kwargs: ``position_ids`` (packing, batch 1), ``cu_seq_lens_q/k`` + ``max_length_q/k``
            (packing), ``deterministic``; others are ignored. ``s_aux``, ``position_bias``,
            ``block_indices`` and ``indices`` raise.

    Returns:
        (out (b, sq, h, d_v), None): attention weights are never materialised.
    """
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("flash_attn_c attention does not support attention sinks (s_aux)")
    if kwargs.get("position_bias") is not None:
        raise NotImplementedError("flash_attn_c attention does not support an additive position_bias")
    for name in ("block_indices", "indices"):  # block-sparse / top-k attention (MiniMax-M3, DeepSeek-V3.2)
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"flash_attn_c attention does not support sparse attention ({name}): "
                                      f"it would attend to every key")
    if kwargs.get("output_attentions", False):
        _warn_once("output_attentions", "flash_attn_c attention does not return attention weights (None is returned)")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            f"flash_attn_c attention expects (batch, heads, seq, head_dim) tensors, got query {tuple(query.shape)}, "
            f"key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    if any(dim == 0 for dim in query.shape):
        raise ValueError(f"flash_attn_c attention: query has a zero dimension {tuple(query.shape)}")

    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    dropout_p = float(dropout) if (dropout and getattr(module, "training", False)) else 0.0
    softcap_value = float(softcap) if softcap else 0.0

    if attention_mask is not None and attention_mask.dim() == 4:
        return _fallback_attention(query, key, value, attention_mask, dropout_p, scaling, softcap_value), None
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            f"flash_attn_c attention: attention_mask must be 2-D (batch, kv_len) or 4-D, got {tuple(attention_mask.shape)}"
        )

    # (b, h, s, d) -> (b, s, h, d): views, no copy; the kernels take any strides but the last.
    q = query.transpose(1, 2)
    k = key.transpose(1, 2)
    v = value.transpose(1, 2)
    head_dim, v_head_dim = q.shape[-1], v.shape[-1]
    if v_head_dim > head_dim:
        raise ValueError(f"flash_attn_c attention: value head dim {v_head_dim} > query head dim {head_dim}")
    if v_head_dim < head_dim:  # e.g. MLA: pad V to the query head dim, crop the output below
        v = F.pad(v, [0, head_dim - v_head_dim])
    target = _kernel_dtype(q, module)
    if target is not None:
        q = q.to(target)
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    if v.dtype != q.dtype:
        v = v.to(q.dtype)

    deterministic = kwargs.get("deterministic")
    if deterministic is None:
        deterministic = os.environ.get("FLASH_ATTENTION_DETERMINISTIC", "0") == "1"
    fa_kwargs = dict(
        dropout_p=dropout_p,
        softmax_scale=scaling,
        causal=causal,
        window_size=_layer_window(module, sliding_window, causal),
        softcap=softcap_value,
        deterministic=bool(deterministic),
    )
    static = torch.compiler.is_compiling()
    b, sq, h, _ = q.shape
    sk, hk = k.shape[1], k.shape[2]

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    position_ids = kwargs.get("position_ids")
    if attention_mask is not None:
        out = _padded_attention(q, k, v, attention_mask, static, fa_kwargs)
    elif cu_q is not None and cu_k is not None:
        max_q = kwargs.get("max_length_q", kwargs.get("max_seqlen_q"))
        max_k = kwargs.get("max_length_k", kwargs.get("max_seqlen_k"))
        out = _varlen_from_cu(q, k, v, cu_q, cu_k, max_q, max_k, static, fa_kwargs)
    else:
        segments = None
        # Packing is only possible without a cache (sq == sk). While compiling it can only be
        # recognised without a host sync for b == 1 (see the module doc).
        if (
            position_ids is not None
            and sq == sk
            and sq > 1
            and position_ids.numel() in (sq, b * sq)
            and (b == 1 or not static)
        ):
            segments = _segments_from_position_ids(position_ids, b, sq, static)
        if segments is not None:
            cu, max_len = segments
            out = flash_attn_c.flash_attn_varlen_func(
                q.reshape(b * sq, h, head_dim),
                k.reshape(b * sk, hk, head_dim),
                v.reshape(b * sk, hk, head_dim),
                cu,
                cu,
                max_len,
                max_len,
                **fa_kwargs,
            ).reshape(b, sq, h, head_dim)
        else:
            out = flash_attn_c.flash_attn_func(q, k, v, **fa_kwargs)

    if v_head_dim < head_dim:
        out = out[..., :v_head_dim]
    return out, None


def _as_max_len(value: Any, cu: torch.Tensor, total: int, static: bool) -> int:
    """``max_length_*`` kwarg -> Python int (a tensor is read on the host, or bounded by the total
    token count while compiling; None is computed from ``cu``)."""
    if isinstance(value, int):
        return value
    if static:
        return total
    if value is None:
        return int((cu[1:] - cu[:-1]).max())
    return int(value)


def _varlen_from_cu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    max_q: Any,
    max_k: Any,
    static: bool,
    fa_kwargs: dict,
) -> torch.Tensor:
    """Packed sequences given by cumulative lengths. q (b, sq, h, d) with b*sq == cu_q[-1] tokens
    (usually b == 1), k/v likewise; returns (b, sq, h, d)."""
    b, sq, h, d = q.shape
    q_flat = q.reshape(b * sq, h, d)
    k_flat = k.reshape(-1, k.shape[2], k.shape[3])
    v_flat = v.reshape(-1, v.shape[2], v.shape[3])
    cu_q = cu_q.to(device=q.device, dtype=torch.int32)
    cu_k = cu_k.to(device=q.device, dtype=torch.int32)
    mq = _as_max_len(max_q, cu_q, q_flat.shape[0], static)
    mk = _as_max_len(max_k, cu_k, k_flat.shape[0], static)
    out = flash_attn_c.flash_attn_varlen_func(q_flat, k_flat, v_flat, cu_q, cu_k, mq, mk, **fa_kwargs)
    return out.reshape(b, sq, h, -1)
