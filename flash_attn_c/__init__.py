"""flash_attn_c: exact FlashAttention in C (CPU) and C-style CUDA, a drop-in for flash_attn 2.8.

    from flash_attn_c import flash_attn_func
    out = flash_attn_func(q, k, v, causal=True)      # q (b, sq, h, d), k/v (b, sk, hk, d)
"""
import torch

from . import _ops
from ._dropout import dropout_mask, fixed_dropout_seed
from .kvcache import flash_attn_with_kvcache
from .interface import (
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
)
from .rotary import RotaryEmbedding, apply_rotary_emb

__version__ = "0.1.0"


def cuda_available() -> bool:
    """True when this build contains the CUDA kernels (independently of a GPU being present)."""
    return bool(_ops.ops.cuda_available())


__all__ = [
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_with_kvcache",
    "apply_rotary_emb",
    "RotaryEmbedding",
    "dropout_mask",
    "fixed_dropout_seed",
    "cuda_available",
    "__version__",
]
