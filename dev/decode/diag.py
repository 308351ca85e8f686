"""Split-KV diagnostics (dev tool): the fused CUDA path of flash_attn_with_kvcache against an fp32
torch reference, attention and append separately, printing the max error and where it sits."""
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from flash_attn_c import flash_attn_with_kvcache  # noqa: E402


def reference(q, kc, vc, cache_seqlens, causal, return_softmax_lse=True):
    """fp32 torch attention of q (b, sq, h, d) over cache rows [0, cache_seqlens[b])."""
    b, sq, h, d = q.shape
    hk = kc.shape[2]
    outs, lses = [], []
    for i in range(b):
        n = int(cache_seqlens[i])
        k = kc[i, :n].float().repeat_interleave(h // hk, dim=1).transpose(0, 1)
        v = vc[i, :n].float().repeat_interleave(h // hk, dim=1).transpose(0, 1)
        s = (q[i].float().transpose(0, 1) @ k.transpose(1, 2)) * d ** -0.5
        if causal:
            qi = torch.arange(sq, device=q.device)[:, None] + n - sq
            s = s.masked_fill(torch.arange(n, device=q.device)[None, :] > qi, float("-inf"))
        outs.append((torch.softmax(s, -1) @ v).transpose(0, 1))
        lses.append(torch.logsumexp(s, -1))
    return torch.stack(outs), torch.stack(lses)


def main() -> int:
    torch.manual_seed(0)
    bad = 0
    dt = torch.bfloat16
    for d, (h, hk), sq, n_cache in itertools.product((32, 64, 128), ((4, 2), (8, 8), (8, 1)), (1, 3),
                                                     (7, 100)):
        b, cap = 2, 128
        q = torch.randn(b, sq, h, d, device="cuda", dtype=dt)
        kc = torch.randn(b, cap, hk, d, device="cuda", dtype=dt)
        vc = torch.randn_like(kc)
        lens = torch.tensor([n_cache, n_cache + 5], dtype=torch.int32, device="cuda")
        for causal in (False, True):
            kw = dict(cache_seqlens=lens, causal=causal, return_softmax_lse=True)
            o1, l1 = flash_attn_with_kvcache(q, kc, vc, **kw)
            o2, l2 = reference(q, kc, vc, lens, causal)
            e = (o1.float() - o2.float()).abs()
            el = (l1 - l2).abs().max().item()
            if e.max().item() > 2e-2 or el > 1e-3:
                bad += 1
                idx = torch.nonzero(e == e.max())[0].tolist()
                print(f"ATTN d={d} h/hk={h}/{hk} sq={sq} n={n_cache} causal={causal}: err {e.max().item():.3g} "
                      f"at {idx} lse err {el:.3g}; ours {o1[0, 0, :2, :4].tolist()} ref {o2[0, 0, :2, :4].tolist()}")
        # append only
        k = torch.randn(b, sq, hk, d, device="cuda", dtype=dt)
        v = torch.randn_like(k)
        kc1, vc1 = kc.clone(), vc.clone()
        flash_attn_with_kvcache(q, kc1, vc1, k, v, cache_seqlens=lens)
        kc2, vc2 = kc.clone(), vc.clone()
        for i in range(b):
            n = int(lens[i])
            kc2[i, n:n + sq], vc2[i, n:n + sq] = k[i], v[i]
        if not (torch.equal(kc1, kc2) and torch.equal(vc1, vc2)):
            bad += 1
            diff = torch.nonzero((kc1 != kc2).any(-1).any(-1)).tolist()
            print(f"APPEND d={d} h/hk={h}/{hk} sq={sq} n={n_cache}: cache rows differ at {diff[:6]}")
    print("diag:", "ok" if not bad else f"{bad} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
