import sys, torch, flash_attn_c as f
q = torch.randn(2, 8, 4, 32, device="cuda", dtype=torch.float16)
s = torch.rand(16, device="cuda").as_strided((2, 4), (2, 1))
try: f.flash_attn_func(q, q, q, alibi_slopes=s)
except Exception as e: print("raised", type(e).__name__, str(e)[:150])
print("done func", flush=True)
