"""Dropout: the keep bit is Philox4x32-10 of (seed, offset, b, h, i, j) (fa_common.h), shared by
CPU, CUDA, forward, backward and flash_attn_c.dropout_mask(): one Philox call per 16 keys
16 (j >> 4) .. + 15 of a row, key j takes byte j & 15 of the output (little-endian words x, y, z,
w) and is kept iff that byte >= t = round(256 p) (in [1, 255] for p > 0).

* the Philox in this file is checked against Random123's published known-answer vectors, then
  used as an independent spec for dropout_mask() (vectorized, and element by element);
* the threshold / scale convention (p quantised to 1/256, scale 1 / (1 - t / 256));
* keep rate within binomial bounds of the quantised 1 - p; adjacent keys, keys of one Philox
  call and neighbouring rows are uncorrelated;
* under fixed_dropout_seed(seed, offset) the output and gradients match the oracle fed with
  dropout_mask(..., seed, offset); S_dmask is negative exactly where dropped;
* the default-generator path: same torch.manual_seed -> bitwise-identical results, consecutive
  calls draw different masks, and backward uses the forward's mask;
* CPU mask == CUDA mask (gpu).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import dev_cases, devices
from oracle import (FWD_FACTOR, assert_grads, assert_lse, assert_ratio, check_dense, cu_from_lens, make_alibi,
                    ref_forward_backward, visible_mask)

import flash_attn_c

_M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on numpy uint64 arrays holding 32-bit values (written from the paper)."""
    c0, c1, c2, c3, k0, k1 = (np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3, k0, k1))
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _M32,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _M32)
        k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
    return c0, c1, c2, c3


def spec_threshold(p) -> int:
    """fa_dropout_threshold: round(256 p) of p as a float32, clamped to [1, 255] for p > 0."""
    p32 = float(np.float32(p))
    return 0 if p32 <= 0 else min(255, max(1, math.floor(p32 * 256.0 + 0.5)))


def spec_dropout_mask(b, h, sq, sk, p, seed, offset) -> torch.Tensor:
    """The keep mask per fa_common.h, bool (b, h, sq, sk), True = kept."""
    bb, hh, ii, jj = np.meshgrid(np.arange(b, dtype=np.uint64), np.arange(h, dtype=np.uint64),
                                 np.arange(sq, dtype=np.uint64), np.arange(sk, dtype=np.uint64),
                                 indexing="ij")
    seed, offset = np.uint64(seed), np.uint64(offset)
    words = philox4x32_10(jj >> np.uint64(4), ii & _M32,
                          ((bb << np.uint64(16)) & _M32) | (hh & np.uint64(0xFFFF)),
                          np.full_like(bb, offset & _M32),
                          np.full_like(bb, seed & _M32),
                          np.full_like(bb, ((seed >> np.uint64(32)) ^ (offset >> np.uint64(32))) & _M32))
    k = jj & np.uint64(15)
    word = np.choose((k >> np.uint64(2)).astype(np.int64), words)
    byte = (word >> (np.uint64(8) * (k & np.uint64(3)))) & np.uint64(0xFF)
    return torch.from_numpy(byte >= np.uint64(spec_threshold(p)))


def keep_bit_by_hand(seed: int, offset: int, b: int, h: int, i: int, j: int, p: float) -> bool:
    """One keep bit from scratch, plain Python ints (no numpy), straight from the definition."""
    m32 = 0xFFFFFFFF
    c = [j >> 4, i & m32, ((b << 16) & m32) | (h & 0xFFFF), offset & m32]
    k0, k1 = seed & m32, ((seed >> 32) ^ (offset >> 32)) & m32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & m32, (p0 >> 32) ^ c[3] ^ k1, p0 & m32]
        k0, k1 = (k0 + 0x9E3779B9) & m32, (k1 + 0xBB67AE85) & m32
    out = c[0] | c[1] << 32 | c[2] << 64 | c[3] << 96  # 16 bytes, little-endian
    return ((out >> (8 * (j & 15))) & 0xFF) >= spec_threshold(p)


def test_philox_known_answer_vectors():
    """Random123's kat_vectors for philox4x32_10 (counter, key -> output)."""
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, expect in kat:
        got = tuple(int(x) for x in philox4x32_10(*ctr, *key))
        assert got == expect


SPEC_CASES = [(0.1, 0, 0), (0.5, 1234, 7), (0.17, (1 << 40) + 5, (3 << 33) + 11), (0.9, 42, 1 << 32),
              (0.0, 99, 3)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("p,seed,offset", SPEC_CASES)
def test_dropout_mask_matches_spec(device, p, seed, offset):
    """dropout_mask() == the Philox spec bit for bit, incl. seeds/offsets above 2**32, sk not a
    multiple of 4, several batches and heads."""
    b, h, sq, sk = 3, 5, 9, 37
    m = flash_attn_c.dropout_mask(b, h, sq, sk, p, seed, offset, device=device)
    assert m.dtype == torch.bool and m.shape == (b, h, sq, sk) and m.device.type == device
    assert torch.equal(m.cpu(), spec_dropout_mask(b, h, sq, sk, p, seed, offset))


@pytest.mark.parametrize("device", devices())
def test_dropout_mask_matches_keep_bit_by_hand(device):
    """A few (b, h, i, j), incl. coordinates past 2**16 keys and 16-key group edges, against
    keep_bit_by_hand; thresholds at the byte ends (t = 1, 128, 255)."""
    for p, seed, offset in [(0.3, 0x123456789ABCDEF, 0xFEDCBA9876543210), (1e-5, 7, 0), (0.5, 3, 1),
                            (0.9985, 11, 5)]:
        b, h, sq, sk = 2, 3, 5, 70
        m = flash_attn_c.dropout_mask(b, h, sq, sk, p, seed, offset, device=device).cpu()
        for bi, hi, i, j in [(0, 0, 0, 0), (1, 2, 4, 69), (1, 0, 3, 15), (0, 2, 1, 16), (1, 1, 2, 31),
                             (0, 1, 4, 47), (1, 2, 0, 64), (0, 0, 2, 7)]:
            assert bool(m[bi, hi, i, j]) == keep_bit_by_hand(seed, offset, bi, hi, i, j, p), (p, bi, hi, i, j)


def test_dropout_threshold_and_scale_convention():
    """p is quantised to t / 256, t = round(256 p) in [1, 255] for p > 0; the kernels' scale is
    1 / (1 - t / 256), so keep * scale has expectation 1 exactly."""
    from flash_attn_c._dropout import dropout_keep_prob, dropout_threshold
    cases = {0.0: 0, 1e-6: 1, 0.001: 1, 0.002: 1, 0.1: 26, 0.17: 44, 0.25: 64, 0.3: 77, 0.5: 128,
             0.9: 230, 0.998: 255, 0.9999: 255}
    for p, t in cases.items():
        assert dropout_threshold(p) == spec_threshold(p) == t, p
        assert dropout_keep_prob(p) == (256 - t) / 256
        if 1 / 512 <= p <= 1 - 1 / 512:
            assert abs(t / 256 - p) <= 1 / 512 + 1e-9


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9, 0.003])
def test_dropout_mask_keep_rate(device, p):
    """Kept fraction within 6 binomial standard deviations of the quantised 1 - p_q = (256 - t) /
    256, overall and per (b, h) (p = 0.003: t = 1, the smallest nonzero drop rate 1/256)."""
    b, h, sq, sk = 4, 4, 128, 128
    m = flash_attn_c.dropout_mask(b, h, sq, sk, p, 2024, 17, device=device).cpu()
    q = 1 - spec_threshold(p) / 256
    n = sq * sk
    for rate, count in [(m.double().mean().item(), b * h * n)] + \
                       [(x, n) for x in m.double().mean(dim=(2, 3)).flatten().tolist()]:
        sigma = math.sqrt(q * (1 - q) / count)
        assert abs(rate - q) <= 6 * sigma, f"keep rate {rate:.4f} vs {q} (6 sigma = {6 * sigma:.4f})"
    # every byte position of the 16-key Philox groups keeps at the same rate
    per_pos = m.reshape(b * h * sq, sk // 16, 16).double().mean(dim=(0, 1))
    sigma = math.sqrt(q * (1 - q) / (b * h * sq * sk // 16))
    assert (per_pos - q).abs().max().item() <= 6 * sigma


@pytest.mark.parametrize("device", devices())
def test_dropout_mask_independence(device):
    """Keep bits of neighbours are uncorrelated: adjacent keys (same Philox word, same call,
    across calls), keys 16 apart (same bytes of the next call), adjacent rows, heads, batches;
    each Pearson correlation within 6 / sqrt(n) of 0. And the 16 bits of one call are not
    constant more often than chance would have it."""
    p = 0.5
    b, h, sq, sk = 2, 2, 256, 256
    m = flash_attn_c.dropout_mask(b, h, sq, sk, p, 99, 3, device=device).cpu().double()

    def corr(x, y):
        x, y = x.flatten() - x.mean(), y.flatten() - y.mean()
        return ((x * y).mean() / (x.std(unbiased=False) * y.std(unbiased=False))).item(), x.numel()

    pairs = {"key+1": (m[..., :-1], m[..., 1:]), "key+4": (m[..., :-4], m[..., 4:]),
             "key+16": (m[..., :-16], m[..., 16:]), "row+1": (m[:, :, :-1], m[:, :, 1:]),
             "row+8": (m[:, :, :-8], m[:, :, 8:]), "head": (m[:, 0], m[:, 1]), "batch": (m[0], m[1])}
    for name, (x, y) in pairs.items():
        r, n = corr(x, y)
        assert abs(r) <= 6 / math.sqrt(n), f"{name}: correlation {r:.4f} (n = {n})"
    groups = m.reshape(-1, 16).sum(dim=1)
    constant = ((groups == 0) | (groups == 16)).double().mean().item()
    assert constant <= 2 * 2 ** -15 + 6 * math.sqrt(2 ** -15 / groups.numel())


@pytest.mark.parametrize("device", devices())
def test_dropout_mask_depends_on_every_coordinate(device):
    """Different seeds, offsets, batches, heads and rows give different masks (no aliasing)."""
    m = flash_attn_c.dropout_mask(2, 2, 2, 256, 0.5, 1, 0, device=device).cpu()
    rows = m.reshape(8, 256)
    for a in range(8):
        for c in range(a + 1, 8):
            assert not torch.equal(rows[a], rows[c])
    for seed, off in [(2, 0), (1, 1), (1 + (1 << 32), 0), (1, 1 << 32)]:
        assert not torch.equal(m, flash_attn_c.dropout_mask(2, 2, 2, 256, 0.5, seed, off, device=device).cpu())


# ---- forward / backward against the oracle under a fixed seed --------------------------------

# (b, sq, sk, h, hk, d, p, causal, window, softcap, alibi)
CPU_CASES = [
    (2, 33, 33, 2, 2, 32, 0.17, False, (-1, -1), 0.0, None),
    (1, 40, 70, 4, 2, 64, 0.5, True, (-1, -1), 0.0, None),
    (1, 70, 40, 2, 1, 40, 0.3, True, (-1, -1), 0.0, "h"),
    (2, 50, 50, 2, 2, 59, 0.1, False, (4, 7), 0.0, None),
    (1, 40, 60, 2, 2, 64, 0.25, False, (-1, -1), 2.0, "bh"),
    (1, 1, 5, 1, 1, 8, 0.5, False, (-1, -1), 0.0, None),
]
GPU_CASES = [
    (2, 257, 257, 4, 4, 64, 0.17, False, (-1, -1), 0.0, None),
    (1, 200, 1100, 8, 2, 128, 0.5, True, (-1, -1), 0.0, None),
    (1, 1100, 200, 4, 1, 40, 0.3, True, (-1, -1), 0.0, "h"),
    (2, 500, 500, 4, 4, 256, 0.1, False, (33, 70), 0.0, None),
    (1, 400, 600, 4, 4, 64, 0.25, False, (-1, -1), 5.0, "bh"),
    (1, 2048, 2048, 2, 2, 128, 0.1, True, (-1, -1), 0.0, None),
    (2, 1000, 1000, 4, 4, 96, 0.9, False, (-1, -1), 0.0, None),
]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d,p,causal,window,softcap,alibi",
                         dev_cases(CPU_CASES, GPU_CASES,
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_dropout_fixed_seed_matches_oracle(device, dtype, b, sq, sk, h, hk, d, p, causal, window,
                                           softcap, alibi):
    seed, offset = 123456789 + sq, 1000 + sk
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(b, sk, hk, d, device=device, dtype=dtype, requires_grad=True)
    slopes = make_alibi(alibi, b, h, device)
    kw = dict(causal=causal, softcap=softcap, alibi_slopes=slopes, dropout_p=p)
    with flash_attn_c.fixed_dropout_seed(seed, offset):
        out, lse, s = flash_attn_c.flash_attn_func(q, k, v, window_size=window,
                                                   return_attn_probs=True, **kw)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)  # outside the context: uses the saved seed
    mask = flash_attn_c.dropout_mask(b, h, sq, sk, p, seed, offset, device=device)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, window=window, dropout_mask=mask, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, window=window, dropout_mask=mask, **kw)
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("lse (pre-dropout)", lse, ref.lse, base.lse, dtype)
    assert_grads(grads, ref.grads, base.grads, dtype)
    # S_dmask: |S| = the pre-dropout probabilities, negative exactly where dropped
    assert_ratio("|S_dmask|", s.abs(), ref.probs, base.probs, dtype, FWD_FACTOR)
    vis = visible_mask(sq, sk, window, causal, device).expand_as(s)
    nz = s != 0
    assert torch.equal((s < 0)[nz], (~mask)[nz]), "S_dmask sign disagrees with dropout_mask"
    assert (s[~vis] == 0).all()


@pytest.mark.parametrize("device,dtype,p,causal",
                         dev_cases([(0.2, False), (0.5, True)], [(0.2, False), (0.5, True), (0.8, True)],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_dropout_varlen_fixed_seed_matches_oracle(device, dtype, p, causal):
    """Varlen dropout coordinates are (sequence, head, local i, local j): the oracle slices a
    (b, h, max_sq, max_sk) dropout_mask per sequence."""
    lens_q = [5, 0, 30, 17] if device == "cpu" else [500, 0, 1030, 17]
    lens_k = [9, 4, 30, 0] if device == "cpu" else [900, 4, 1030, 0]
    h, hk, d = 4, 2, 32
    seed, offset = 77, 5
    q = torch.randn(sum(lens_q), h, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(sum(lens_k), hk, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(sum(lens_k), hk, d, device=device, dtype=dtype, requires_grad=True)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    mq, mk = max(lens_q), max(lens_k)
    with flash_attn_c.fixed_dropout_seed(seed, offset):
        out, lse, s = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, mq, mk, dropout_p=p,
                                                          causal=causal, return_attn_probs=True)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    mask = flash_attn_c.dropout_mask(len(lens_q), h, mq, mk, p, seed, offset, device=device)
    kw = dict(causal=causal, dropout_p=p, dropout_mask=mask, cu_seqlens_q=cq, cu_seqlens_k=ck,
              max_seqlen_q=mq, max_seqlen_k=mk)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("lse", lse, ref.lse, base.lse, dtype)
    assert_grads(grads, ref.grads, base.grads, dtype)
    nz = s != 0
    assert torch.equal((s < 0)[nz], (~mask)[nz])


# ---- the default generator path ----------------------------------------------------------------


def _run(device, dtype, p, seed, shape=(2, 64, 3, 32)):
    torch.manual_seed(seed)
    g = torch.Generator(device="cpu").manual_seed(0)  # inputs independent of the global RNG
    q, k, v = (torch.randn(shape, generator=g).to(device=device, dtype=dtype).requires_grad_()
               for _ in range(3))
    out = flash_attn_c.flash_attn_func(q, k, v, dropout_p=p, causal=True)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    return out.detach(), grads


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dropout_same_manual_seed_is_bitwise_identical(device, dtype):
    a = _run(device, dtype, 0.3, 11)
    b = _run(device, dtype, 0.3, 11)
    c = _run(device, dtype, 0.3, 12)
    assert torch.equal(a[0], b[0])
    for x, y in zip(a[1], b[1]):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]), "a different seed must draw a different mask"


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dropout_consecutive_calls_draw_new_masks(device, dtype):
    q, k, v = (torch.randn(1, 32, 2, 16, device=device, dtype=dtype) for _ in range(3))
    a = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.5)
    b = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.5)
    assert not torch.equal(a, b), "the generator's offset must advance between calls"


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dropout_zero_is_no_dropout(device, dtype):
    """dropout_p=0.0 drops nothing (no negated entry in S_dmask) and gives the no-dropout oracle's
    output; dropout_p=0.5 on the same inputs drops about half and changes the output."""
    case = check_dense(device, dtype, 1, 32, 32, 2, 2, 16, check_lse=False)
    q, k, v = case.inputs
    out0, _, s0 = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.0, return_attn_probs=True)
    assert (s0 >= 0).all() and torch.equal(out0, case.ours_out)
    out5, _, s5 = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.5, return_attn_probs=True)
    assert 0.3 < (s5 < 0).float().mean().item() < 0.7
    assert (out5.float() - out0.float()).abs().max().item() > 0.05


@pytest.mark.parametrize("device,dtype,p",
                         dev_cases([0.2, 0.6], [0.2, 0.6], marks=[pytest.mark.parity_grad]))
def test_dropout_backward_uses_forward_mask(device, dtype, p):
    """Default generator (no fixed seed): recover the forward's mask from S_dmask's signs, then
    the gradients must match the oracle fed with that mask."""
    b, sq, sk, h, d = 2, 45, 60, 2, 32
    q, k, v = (torch.randn(b, s, h, d, device=device, dtype=dtype, requires_grad=True)
               for s in (sq, sk, sk))
    out, _, s = flash_attn_c.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    # An entry whose probability rounded to 0 has no sign; such entries weigh ~0 either way.
    mask = ~(s < 0)
    kw = dict(dropout_p=p, dropout_mask=mask)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_grads(grads, ref.grads, base.grads, dtype)


@pytest.mark.parametrize("device,dtype,p", dev_cases([0.1, 0.5], [0.1, 0.5]))
def test_dropout_keep_rate_in_forward(device, dtype, p):
    """Fraction of dropped (negative) S_dmask entries within 6 sigma of p_q = t / 256."""
    q, k, v = (torch.randn(2, 128, 4, 16, device=device, dtype=dtype) for _ in range(3))
    _, _, s = flash_attn_c.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True)
    nz = s != 0
    rate = (s[nz] < 0).double().mean().item()
    p = spec_threshold(p) / 256
    sigma = math.sqrt(p * (1 - p) / nz.sum().item())
    assert abs(rate - p) <= 6 * sigma


# ---- CPU vs CUDA ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("p,seed,offset", SPEC_CASES + [(0.33, (1 << 62) + 3, (1 << 45) + 9)])
def test_dropout_mask_cpu_equals_cuda(p, seed, offset):
    shape = (3, 17, 100, 301)
    a = flash_attn_c.dropout_mask(*shape, p, seed, offset, device="cpu")
    b = flash_attn_c.dropout_mask(*shape, p, seed, offset, device="cuda")
    assert torch.equal(a, b.cpu())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dropout_forward_mask_cpu_equals_cuda(dtype):
    """The same fixed (seed, offset) drops the same elements in the CPU and CUDA forward (the signs
    of S_dmask where both are nonzero); each device's outputs and gradients against the oracle fed
    with that mask are the other dropout tests' business."""
    b, sq, sk, h, d = 2, 100, 140, 4, 64
    q, k, v = (torch.randn(b, s, h, d, dtype=dtype) for s in (sq, sk, sk))
    masks = []
    for dev in ("cpu", "cuda"):
        with flash_attn_c.fixed_dropout_seed(31337, 4242):
            _, _, s = flash_attn_c.flash_attn_func(q.to(dev), k.to(dev), v.to(dev), dropout_p=0.4,
                                                   causal=True, return_attn_probs=True)
        masks.append((s.cpu() < 0, s.cpu() != 0))
    both = masks[0][1] & masks[1][1]
    assert torch.equal(masks[0][0][both], masks[1][0][both])


@pytest.mark.gpu
def test_cuda_graph_capture_replay_without_dropout():
    """The forward can be captured in a CUDA graph (no host syncs, no allocation in the kernels);
    a replay on new inputs copied into the static buffers equals the eager result bitwise."""
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    flash_attn_c.flash_attn_func(q, k, v, causal=True)  # warm-up outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    for _ in range(2):
        for t in (q, k, v):
            t.copy_(torch.randn_like(t))
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, flash_attn_c.flash_attn_func(q, k, v, causal=True))


@pytest.mark.gpu
def test_cuda_graph_capture_dropout_draws_new_masks():
    """docs/conventions.md (Dropout): on CUDA the seed/offset come from the generator's Philox state, so dropout is
    graph-safe: each replay draws a fresh mask (like torch's own dropout under graphs)."""
    q, k, v = (torch.randn(1, 256, 2, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.3)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.3)
    g.replay()
    first = out.clone()
    g.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(first).all() and torch.isfinite(out).all()
    assert not torch.equal(first, out), "replays must advance the Philox offset"
