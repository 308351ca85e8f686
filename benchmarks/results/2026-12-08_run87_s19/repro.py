import sys, torch, flash_attn_c as f
q = torch.randn(2, 1, 4, 32, device="cuda", dtype=torch.float16)
kc, vc = (torch.randn(2, 16, 2, 32, device="cuda", dtype=torch.float16) for _ in range(2))
mode = sys.argv[1]
if mode == "none":
    print(f.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=5).shape)
elif mode == "ok":
    print(f.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=5, alibi_slopes=torch.rand(2, 4, device="cuda")).shape)
elif mode == "badshape":
    try: f.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=5, alibi_slopes=torch.rand(3, device="cuda"))
    except Exception as e: print("raised", type(e).__name__, str(e)[:120])
else:
    s = torch.rand(16, device="cuda").as_strided((2, 4), (2, 1))
    try: f.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=5, alibi_slopes=s)
    except Exception as e: print("raised", type(e).__name__, str(e)[:120])
print("done", mode, flush=True)
