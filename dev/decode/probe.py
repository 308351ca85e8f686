"""Quick GPU probe of the split-KV decode path (dev tool): parity of flash_attn_with_kvcache
against an fp32 reference on gathered keys, then decode timings beside torch SDPA and the
device's copy bandwidth. Not the benchmark of record (python -m flash_attn_c.bench --decode is).

    python dev/decode/probe.py [--quick] [--parity] [--splits] [--split-grid out.json]
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from flash_attn_c import flash_attn_with_kvcache  # noqa: E402
from flash_attn_c.bench.measure import TimingSettings, _time_cuda_events  # noqa: E402


def reference(q, kc, vc, lens, causal, scale):
    """fp32 attention of q (b, sq, h, d) over kc/vc (b, s, hk, d) rows [0, lens[b])."""
    b, sq, h, d = q.shape
    hk = kc.shape[2]
    out = torch.empty(b, sq, h, d, dtype=torch.float32, device=q.device)
    for i in range(b):
        n = int(lens[i])
        k = kc[i, :n].float().repeat_interleave(h // hk, dim=1).transpose(0, 1)
        v = vc[i, :n].float().repeat_interleave(h // hk, dim=1).transpose(0, 1)
        s = (q[i].float().transpose(0, 1) @ k.transpose(1, 2)) * scale
        if causal:
            qi = torch.arange(sq, device=q.device)[:, None] + n - sq
            s = s.masked_fill(torch.arange(n, device=q.device)[None, :] > qi, float("-inf"))
        out[i] = (torch.softmax(s, -1) @ v).transpose(0, 1)
    return out


def paged(kc, page):
    """(b, s, hk, d) -> (blocks, page, hk, d) in a random block order, and the block table."""
    b, s, hk, d = kc.shape
    nb = s // page
    perm = torch.randperm(b * nb, device=kc.device)
    pool = torch.empty(b * nb, page, hk, d, dtype=kc.dtype, device=kc.device)
    pool[perm] = kc.reshape(b * nb, page, hk, d)
    return pool, perm.view(b, nb).to(torch.int32)


def parity() -> bool:
    ok = True
    torch.manual_seed(0)
    for d in (64, 128, 256, 80):
        for (h, hk) in ((32, 8), (8, 8), (16, 1)):
            for sq in (1, 4):
                for page in (0, 1, 16, 48):
                    for splits in (0, 1, 3):
                        b, s = 3, 480
                        q = torch.randn(b, sq, h, d, device="cuda", dtype=torch.bfloat16)
                        kc = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
                        vc = torch.randn_like(kc)
                        lens = torch.tensor([0, 37, 480], dtype=torch.int32, device="cuda")
                        lens = lens.clamp(min=sq)
                        kw = dict(cache_seqlens=lens, causal=True, num_splits=splits,
                                  return_softmax_lse=True)
                        if page:
                            pk, bt = paged(kc, page)
                            pv = torch.empty_like(pk)
                            pv[bt.flatten().long()] = vc.reshape(-1, page, hk, d)
                            out, lse = flash_attn_with_kvcache(q, pk, pv, block_table=bt, **kw)
                        else:
                            out, lse = flash_attn_with_kvcache(q, kc, vc, **kw)
                        ref = reference(q, kc, vc, lens.tolist(), True, d ** -0.5)
                        err = (out.float() - ref).abs().max().item()
                        if not err < 2e-2 or not torch.isfinite(lse).all():
                            print(f"FAIL d={d} h/hk={h}/{hk} sq={sq} page={page} splits={splits}: "
                                  f"max err {err:.3g}")
                            ok = False
    print("parity:", "ok" if ok else "FAILED")
    return ok


def cuda_time(fn, reps=50) -> float:
    """Median ms of fn by CUDA events after 5 warm-up calls (the bench's event timer)."""
    return _time_cuda_events(fn, TimingSettings(warmup=5, reps=reps, min_reps=reps))


def timings(quick: bool) -> None:
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = cuda_time(lambda: dst.copy_(src), 20)
    bw = 2 * src.numel() / copy_ms / 1e6
    print(f"copy bandwidth {bw:.0f} GB/s (read + write of 2 GiB)")
    del src, dst
    print("| b | cache | h/hk | page | ours GB/s | frac copy | ours ms | flash | cudnn | efficient | best/ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    d = 128
    grid = [(1, 32768), (8, 8192), (16, 16384), (64, 4096), (64, 16384), (128, 8192)]
    if quick:
        grid = grid[:3]
    for (h, hk) in ((32, 8),):
        for b, s in grid:
            q = torch.randn(b, 1, h, d, device="cuda", dtype=torch.bfloat16)
            kc = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
            nbytes = 2 * kc.numel() * 2
            for page in (0, 16, 256):
                if page:
                    pk, bt = paged(kc, page)
                    pv = torch.empty_like(pk)
                    pv[bt.flatten().long()] = vc.reshape(-1, page, hk, d)
                    ms = cuda_time(lambda: flash_attn_with_kvcache(q, pk, pv, cache_seqlens=lens,
                                                                   block_table=bt))
                    del pk, pv
                else:
                    ms = cuda_time(lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens))
                peers = {}
                if not page:
                    qt, kt, vt = q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2)
                    for name, be in (("flash", SDPBackend.FLASH_ATTENTION),
                                     ("cudnn", SDPBackend.CUDNN_ATTENTION),
                                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                        try:
                            with sdpa_kernel([be]):
                                peers[name] = cuda_time(lambda: F.scaled_dot_product_attention(
                                    qt, kt, vt, enable_gqa=True))
                        except Exception:  # noqa: BLE001
                            peers[name] = float("nan")
                gbs = nbytes / ms / 1e6
                best = min((v for v in peers.values() if not math.isnan(v)), default=float("nan"))
                cells = " | ".join(f"{peers.get(n, float('nan')):.3f}" for n in ("flash", "cudnn", "efficient"))
                print(f"| {b} | {s} | {h}/{hk} | {page or '-'} | {gbs:.0f} | {gbs / bw:.2f} | {ms:.3f} | "
                      f"{cells} | {best / ms:.2f} |")
            del kc, vc


def splits_sweep() -> None:
    """Time of small-batch decodes against num_splits (0 = the heuristic)."""
    h, hk, d = 32, 8, 128
    print("| b | cache | " + " | ".join(f"splits {n} ms" for n in (0, 16, 32, 64, 128)) + " |")
    print("|---|---|" + "---|" * 5)
    for b, s in ((1, 32768), (1, 131072), (4, 16384), (8, 8192)):
        q = torch.randn(b, 1, h, d, device="cuda", dtype=torch.bfloat16)
        kc = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
        cells = [cuda_time(lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=n))
                 for n in (0, 16, 32, 64, 128)]
        print(f"| {b} | {s} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
        del kc, vc


SPLIT_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def split_grid(out_json: str) -> None:
    """Every candidate split count on a grid of decode shapes, timed like the bench (do_bench with
    its L2 flush, median): the data the num_splits = 0 heuristic (fa_tuning.h) is fitted to."""
    import json
    from flash_attn_c.bench.measure import time_ms
    settings = TimingSettings(warmup=5, reps=20, cuda_warmup_ms=5, cuda_rep_ms=30)
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    shapes = [(128, 32, hk, b, s) for hk in (8, 32) for b in (1, 2, 4, 8, 16, 32, 64)
              for s in (1024, 4096, 16384, 65536)]
    shapes += [(d, 32, 8, b, s) for d in (64, 256) for b in (1, 4, 16) for s in (4096, 32768)]
    rows = []
    print(f"SMs {sms}")
    print("| d | h/hk | b | cache | heuristic ms | best n | best ms | heur/best | n=1 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d, h, hk, b, s in shapes:
        if b * s * hk * d * 4 > (4 << 30):
            continue
        q = torch.randn(b, 1, h, d, device=dev, dtype=torch.bfloat16)
        kc = torch.randn(b, s, hk, d, device=dev, dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        lens = torch.full((b,), s, dtype=torch.int32, device=dev)
        tiles = (s + 63) // 64
        cands = [0] + [n for n in SPLIT_CANDIDATES if n <= tiles]
        times = {n: time_ms(lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=n),
                            dev, settings) for n in cands}
        best = min((n for n in cands if n), key=lambda n: times[n])
        rows.append(dict(d=d, h=h, hk=hk, b=b, s=s, sms=sms, times={str(k): v for k, v in times.items()}))
        print(f"| {d} | {h}/{hk} | {b} | {s} | {times[0]:.4f} | {best} | {times[best]:.4f} | "
              f"{times[0] / times[best]:.3f} | {times[1]:.4f} |", flush=True)
        del q, kc, vc
    with open(out_json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--splits", action="store_true", help="only the num_splits sweep")
    ap.add_argument("--parity", action="store_true", help="only the parity cases (e.g. under "
                    "compute-sanitizer --kernel-name kns=splitkv)")
    ap.add_argument("--split-grid", metavar="JSON", help="every split count on a grid of shapes, "
                    "timed with the bench's flush (the heuristic's data), saved to JSON")
    args = ap.parse_args()
    if args.parity:
        sys.exit(0 if parity() else 1)
    if args.split_grid:
        split_grid(args.split_grid)
        sys.exit(0)
    if args.splits:
        splits_sweep()
        sys.exit(0)
    good = parity()
    timings(args.quick)
    sys.exit(0 if good else 1)
