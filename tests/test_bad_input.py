"""Bad input gets a clear error (ValueError / RuntimeError / TypeError) whose message names the
offending argument. One test per case; never a crash, never a silent wrong answer."""
from __future__ import annotations

import pytest
import torch

from conftest import HAS_CUDA
from oracle import cu_from_lens

import flash_attn_c

ERRORS = (ValueError, RuntimeError, TypeError)
f = flash_attn_c.flash_attn_func
fv = flash_attn_c.flash_attn_varlen_func


def qkv(b=2, sq=8, sk=8, h=4, hk=4, d=32, dtype=torch.float16, device="cpu"):
    return (torch.randn(b, sq, h, d, dtype=dtype, device=device),
            torch.randn(b, sk, hk, d, dtype=dtype, device=device),
            torch.randn(b, sk, hk, d, dtype=dtype, device=device))


def varlen(lens_q=(3, 5), lens_k=(4, 4), h=2, d=16):
    q = torch.randn(sum(lens_q), h, d, dtype=torch.float16)
    k = torch.randn(sum(lens_k), h, d, dtype=torch.float16)
    v = torch.randn(sum(lens_k), h, d, dtype=torch.float16)
    return q, k, v, cu_from_lens(lens_q, "cpu"), cu_from_lens(lens_k, "cpu"), max(lens_q), max(lens_k)


# ---- dtype ------------------------------------------------------------------------------------

def test_q_float64_rejected():
    q, k, v = qkv(dtype=torch.float64)
    with pytest.raises(ERRORS, match=r"\bq\b"):
        f(q, k, v)


def test_q_integer_rejected():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bq\b"):
        f(q.to(torch.int32), k, v)


def test_k_dtype_differs_from_q():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bk\b"):
        f(q, k.to(torch.bfloat16), v)


def test_v_dtype_differs_from_q():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bv\b"):
        f(q, k, v.float())


@pytest.mark.gpu
def test_float32_on_cuda_rejected():
    q, k, v = qkv(dtype=torch.float32, device="cuda")
    with pytest.raises(ERRORS, match=r"\bq\b"):
        f(q, k, v)


def test_q_not_a_tensor():
    _, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bq\b"):
        f([[1.0]], k, v)


# ---- device -----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_k_on_other_device():
    q, k, v = qkv(device="cuda")
    with pytest.raises(ERRORS, match=r"\bk\b"):
        f(q, k.cpu(), v)


@pytest.mark.gpu
def test_v_on_other_device():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bv\b"):
        f(q, k, v.cuda())


@pytest.mark.gpu
def test_cu_seqlens_on_other_device():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_q"):
        fv(q.cuda(), k.cuda(), v.cuda(), cq, ck.cuda(), mq, mk)


@pytest.mark.gpu
def test_alibi_on_other_device():
    q, k, v = qkv(device="cuda")
    with pytest.raises(ERRORS, match=r"alibi_slopes"):
        f(q, k, v, alibi_slopes=torch.rand(4))


# ---- rank and shapes --------------------------------------------------------------------------

def test_q_wrong_rank_dense():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bq\b"):
        f(q[0], k, v)


def test_k_wrong_rank_dense():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bk\b"):
        f(q, k.unsqueeze(0), v)


def test_q_wrong_rank_varlen():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"\bq\b"):
        fv(q.unsqueeze(0), k, v, cq, ck, mq, mk)


def test_v_shape_differs_from_k():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bv\b"):
        f(q, k, v[:, :7])


def test_k_batch_differs_from_q():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bk\b"):
        f(q, k[:1], v[:1])


def test_k_head_dim_differs_from_q():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"\bk\b"):
        f(q, k[..., :16], v[..., :16])


def test_heads_not_divisible_by_kv_heads():
    q, k, v = qkv(h=4, hk=3)
    with pytest.raises(ERRORS, match=r"(?i)heads"):
        f(q, k, v)


def test_head_dim_above_256():
    q, k, v = qkv(d=264)
    with pytest.raises(ERRORS, match=r"head_dim|head dim"):
        f(q, k, v)


def test_qkvpacked_wrong_shape():
    with pytest.raises(ERRORS, match=r"\bqkv\b"):
        flash_attn_c.flash_attn_qkvpacked_func(torch.randn(2, 8, 2, 4, 32, dtype=torch.float16))


def test_kvpacked_wrong_shape():
    q, _, _ = qkv()
    with pytest.raises(ERRORS, match=r"\bkv\b"):
        flash_attn_c.flash_attn_kvpacked_func(q, torch.randn(2, 8, 3, 4, 32, dtype=torch.float16))


def test_q_last_dim_not_contiguous():
    q, k, v = qkv(d=64)
    with pytest.raises(ERRORS, match=r"\bq\b"):
        f(q[..., ::2], k[..., :32], v[..., :32])


def test_v_last_dim_not_contiguous():
    q, k, v = qkv(d=32)
    v2 = torch.randn(2, 8, 4, 64, dtype=torch.float16)[..., ::2]
    with pytest.raises(ERRORS, match=r"\bv\b"):
        f(q, k, v2)


def test_op_level_last_dim_not_contiguous():
    """The op validates strides itself too (callers may bypass the Python layer)."""
    q, k, v = qkv(d=64)
    with pytest.raises(ERRORS, match=r"\bq\b"):
        torch.ops.flash_attn_c.fwd(q[..., ::2], k[..., :32], v[..., :32], None, None, 0, 0, 0.0,
                                   0.2, -1, -1, 0.0, None, False, None)


# ---- cu_seqlens / max_seqlen ------------------------------------------------------------------

def test_cu_seqlens_q_not_int32():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_q"):
        fv(q, k, v, cq.long(), ck, mq, mk)


def test_cu_seqlens_k_not_int32():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_k"):
        fv(q, k, v, cq, ck.long(), mq, mk)


def test_cu_seqlens_wrong_length():
    """cu_seqlens_k with a different number of sequences than cu_seqlens_q."""
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens"):
        fv(q, k, v, cq, cu_from_lens([4, 2, 2], "cpu"), mq, mk)


def test_cu_seqlens_q_decreasing():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_q"):
        fv(q, k, v, torch.tensor([0, 5, 3], dtype=torch.int32), ck, mq, mk)


def test_cu_seqlens_q_exceeds_rows():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_q"):
        fv(q, k, v, torch.tensor([0, 3, 9], dtype=torch.int32), ck, 6, mk)


def test_cu_seqlens_q_2d():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_q"):
        fv(q, k, v, cq.unsqueeze(0), ck, mq, mk)


def test_max_seqlen_q_too_small():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"max_seqlen_q"):
        fv(q, k, v, cq, ck, mq - 1, mk)


def test_max_seqlen_k_too_small():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"max_seqlen_k"):
        fv(q, k, v, cq, ck, mq, mk - 1)


@pytest.mark.gpu
def test_max_seqlen_too_small_cuda():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"max_seqlen_q"):
        fv(q.cuda(), k.cuda(), v.cuda(), cq.cuda(), ck.cuda(), mq - 1, mk)


@pytest.mark.gpu
def test_cu_seqlens_decreasing_cuda():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"cu_seqlens_k"):
        fv(q.cuda(), k.cuda(), v.cuda(), cq.cuda(), torch.tensor([0, 5, 3], dtype=torch.int32,
                                                                  device="cuda"), mq, mk)


# ---- semantics arguments ----------------------------------------------------------------------

def test_window_left_below_minus_one():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"window_size"):
        f(q, k, v, window_size=(-2, 0))


def test_window_right_below_minus_one():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"window_size"):
        f(q, k, v, window_size=(3, -5))


def test_window_wrong_length():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"window_size"):
        f(q, k, v, window_size=(1, 2, 3))


def test_dropout_p_one():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"dropout_p"):
        f(q, k, v, dropout_p=1.0)


def test_dropout_p_negative():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"dropout_p"):
        f(q, k, v, dropout_p=-0.1)


def test_dropout_mask_p_out_of_range():
    with pytest.raises(ERRORS, match=r"dropout_p"):
        flash_attn_c.dropout_mask(1, 1, 4, 4, 1.5, 0, 0)


def test_softcap_negative():
    q, k, v = qkv()
    with pytest.raises(ERRORS, match=r"softcap"):
        f(q, k, v, softcap=-1.0)


def test_alibi_wrong_shape():
    q, k, v = qkv(h=4)
    with pytest.raises(ERRORS, match=r"alibi_slopes"):
        f(q, k, v, alibi_slopes=torch.rand(3))


def test_alibi_wrong_batch_shape():
    q, k, v = qkv(b=2, h=4)
    with pytest.raises(ERRORS, match=r"alibi_slopes"):
        f(q, k, v, alibi_slopes=torch.rand(3, 4))


def test_alibi_wrong_dtype():
    q, k, v = qkv(h=4)
    with pytest.raises(ERRORS, match=r"alibi_slopes"):
        f(q, k, v, alibi_slopes=torch.rand(4, dtype=torch.float16))


def test_max_seqlen_not_int():
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises(ERRORS, match=r"max_seqlen_q"):
        fv(q, k, v, cq, ck, torch.tensor(mq), mk)


def test_block_table_unsupported_is_clear():
    """Paged KV (block_table) is not implemented: a clear error naming it, not a wrong answer."""
    q, k, v, cq, ck, mq, mk = varlen()
    with pytest.raises((NotImplementedError,) + ERRORS, match=r"block_table"):
        fv(q, k, v, cq, ck, mq, mk, block_table=torch.zeros(2, 1, dtype=torch.int32))


@pytest.mark.skipif(HAS_CUDA, reason="only meaningful on a build/machine without CUDA")
def test_cuda_tensor_without_cuda_is_clear():
    """Without a GPU, creating a CUDA tensor already fails in torch; nothing to test beyond that
    our dropout_mask names the device problem when asked for cuda."""
    with pytest.raises(ERRORS, match=r"(?i)cuda"):
        flash_attn_c.dropout_mask(1, 1, 4, 4, 0.5, 0, 0, device="cuda")
