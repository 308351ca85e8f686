"""Does a decode timing depend on what ran just before it (dev tool)? Times ours on one cache,
then right after a few seconds of sdpa MATH on a large decode (the bench's last peer of the
previous config), then after a pause; prints SM clock and temperature beside each time.

    python dev/decode/heat_probe.py
"""
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path.cwd()))
from flash_attn_c import flash_attn_with_kvcache  # noqa: E402
from flash_attn_c.bench.measure import TimingSettings, time_ms  # noqa: E402


def smi() -> str:
    q = "clocks.sm,clocks.mem,temperature.gpu,power.draw,clocks_throttle_reasons.active"
    return subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    dev, st = torch.device("cuda"), TimingSettings(cuda_warmup_ms=10, cuda_rep_ms=40)
    b, s, h, hk, d = 128, 1024, 32, 8, 128
    q = torch.randn(b, 1, h, d, device=dev, dtype=torch.bfloat16)
    kc = torch.randn(b, s, hk, d, device=dev, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    lens = torch.full((b,), s, dtype=torch.int32, device=dev)
    ours = lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens)  # noqa: E731
    print(f"cold:        {time_ms(ours, dev, st) * 1e3:8.1f} us | {smi()}", flush=True)
    hq = torch.randn(8, 32, 1, d, device=dev, dtype=torch.bfloat16)
    hkv = torch.randn(8, 32, 16384, d, device=dev, dtype=torch.bfloat16)
    for rnd in range(2):
        t0 = time.time()
        with sdpa_kernel([SDPBackend.MATH]):
            while time.time() - t0 < 4:
                F.scaled_dot_product_attention(hq, hkv, hkv)
        torch.cuda.synchronize()
        print(f"after MATH:  {time_ms(ours, dev, st) * 1e3:8.1f} us | {smi()}", flush=True)
        print(f"again:       {time_ms(ours, dev, st) * 1e3:8.1f} us | {smi()}", flush=True)
        time.sleep(5)
        print(f"after 5 s:   {time_ms(ours, dev, st) * 1e3:8.1f} us | {smi()}", flush=True)


if __name__ == "__main__":
    main()
