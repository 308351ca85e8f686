"""Localizes CPU-vs-CUDA differences of flash_attn_with_kvcache on one small case: compares the
output and LSE of the same inputs on both devices, and the CUDA varlen op called directly."""
import torch

import flash_attn_c
from flash_attn_c import flash_attn_with_kvcache

torch.manual_seed(0)
b, sq, s_new, h, hk, d, sc = 2, 3, 3, 4, 2, 32, 16
for causal in (False, True):
    q = torch.randn(b, sq, h, d, dtype=torch.bfloat16)
    kc, vc = torch.randn(b, sc, hk, d, dtype=torch.bfloat16), torch.randn(b, sc, hk, d, dtype=torch.bfloat16)
    k, v = torch.randn(b, s_new, hk, d, dtype=torch.bfloat16), torch.randn(b, s_new, hk, d, dtype=torch.bfloat16)
    seqlens = torch.tensor([5, 2], dtype=torch.int32)
    res = {}
    for dev in ("cpu", "cuda"):
        args = [t.to(dev) for t in (q, kc.clone(), vc.clone(), k, v)]
        out, lse = flash_attn_with_kvcache(args[0], args[1], args[2], args[3], args[4],
                                           cache_seqlens=seqlens.to(dev), causal=causal,
                                           return_softmax_lse=True)
        res[dev] = (out.float().cpu(), lse.cpu(), args[1].float().cpu())
    (oc, lc, kcc), (og, lg, kcg) = res["cpu"], res["cuda"]
    print(f"causal={causal}: out max diff {(oc - og).abs().max():.3e}  lse max diff "
          f"{(lc.nan_to_num(0, 0, 0) - lg.nan_to_num(0, 0, 0)).abs().max():.3e}  cache diff "
          f"{(kcc - kcg).abs().max():.3e}")
    print("  lse cpu ", lc[0, 0].tolist(), "\n  lse cuda", lg[0, 0].tolist())
# the varlen op directly, uneven lengths
cu_q = torch.tensor([0, 3, 6], dtype=torch.int32)
cu_k = torch.tensor([0, 8, 13], dtype=torch.int32)
qv = torch.randn(6, h, d, dtype=torch.bfloat16)
kv_, vv = torch.randn(13, hk, d, dtype=torch.bfloat16), torch.randn(13, hk, d, dtype=torch.bfloat16)
for causal in (False, True):
    r = [flash_attn_c.flash_attn_varlen_func(*(t.to(dev) for t in (qv, kv_, vv, cu_q, cu_k)), 3, 8,
                                             causal=causal, return_attn_probs=True) for dev in ("cpu", "cuda")]
    print(f"varlen causal={causal}: out diff {(r[0][0].float() - r[1][0].float().cpu()).abs().max():.3e} "
          f"lse diff {(r[0][1] - r[1][1].cpu()).abs().max():.3e}")
