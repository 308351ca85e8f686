"""End-to-end decode in the bench: a transformers Llama's greedy ``generate()`` with flash_attn_c
as its attention implementation beside the same model on ``sdpa`` (``--decode-generate N``).

The model is randomly initialised (no download) and identical for both runs (a deep copy switched
to our attention). Each run generates N new tokens for a batch of prompts (dynamic cache: every
step is one query token over the cache, which flash_attn_c routes to its split-KV kernel). Reported
per implementation: median wall time of ``generate()`` over the repeats after one warm-up, new
tokens per second, and whether the tokens equal sdpa's (random weights make near-ties, so a
difference in low precision is reported, not treated as a failure; tests/test_decode.py checks
greedy validity against the oracle logits).
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Optional

import torch

# model shapes: a small Llama on CUDA (h/hk 16/4, d 64), a tiny one on CPU (seconds)
GENERATE_MODELS: dict[str, dict[str, Any]] = {
    "cuda": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                 num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=8192,
                 batch=8, prompt=1024, dtype=torch.bfloat16),
    "cpu": dict(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                batch=2, prompt=32, dtype=torch.float32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generate(device: torch.device, new_tokens: int, reps: int = 3,
                  seed: int = 0) -> dict[str, Any]:
    """Times greedy generate() of the device's model with sdpa and with flash_attn_c.

    Returns {"model": shapes, "rows": [{backend, ms, tokens_per_s, tokens_equal_sdpa,
    first_difference}], "error": None or a reason}. Needs transformers; a missing package or a
    failing run gives an "error" entry instead of raising (the rest of the bench stands)."""
    spec = dict(GENERATE_MODELS[device.type])
    batch, prompt, dtype = spec.pop("batch"), spec.pop("prompt"), spec.pop("dtype")
    info = {"batch": batch, "prompt": prompt, "new_tokens": new_tokens,
            "dtype": str(dtype).replace("torch.", ""), **spec}
    try:
        from transformers import AutoModelForCausalLM, LlamaConfig

        from ..integrations.transformers import register
    except Exception as exc:  # noqa: BLE001  transformers is optional for the bench
        return {"model": info, "rows": [], "error": f"{type(exc).__name__}: {exc}"}
    try:
        cfg = LlamaConfig(**spec, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          tie_word_embeddings=False)
        torch.manual_seed(seed)
        ref = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
        ref = ref.to(device=device, dtype=dtype).eval()
        ours = copy.deepcopy(ref)
        name = register()
        ours.set_attn_implementation(name)
        if ours.config._attn_implementation != name:  # would time sdpa twice
            raise RuntimeError(f"the model did not switch to {name!r}")
        g = torch.Generator().manual_seed(seed + 1)
        ids = torch.randint(3, cfg.vocab_size, (batch, prompt), generator=g).to(device)
        mask = torch.ones_like(ids)
        gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   pad_token_id=0)
        rows, tokens = [], {}
        for name, model in (("sdpa", ref), ("ours", ours)):
            times = []
            with torch.no_grad():
                for i in range(reps + 1):  # the first call warms up (allocator, kernels)
                    _sync(device)
                    t0 = time.perf_counter()
                    out = model.generate(ids, attention_mask=mask, **gen)
                    _sync(device)
                    if i:
                        times.append(time.perf_counter() - t0)
            tokens[name] = out[:, prompt:]
            ms = statistics.median(times) * 1e3
            rows.append({"backend": name, "ms": ms,
                         "tokens_per_s": batch * new_tokens / (ms * 1e-3)})
        diff = (tokens["ours"] != tokens["sdpa"]).any(0).nonzero()
        first: Optional[int] = int(diff[0]) if diff.numel() else None
        for r in rows:
            r["tokens_equal_sdpa"] = first is None
            r["first_difference"] = first
        return {"model": info, "rows": rows, "error": None}
    except Exception as exc:  # noqa: BLE001  reported in the results, not fatal
        return {"model": info, "rows": [], "error": f"{type(exc).__name__}: {exc}"[:300]}


def format_generate(result: dict[str, Any]) -> str:
    """Console / results.md lines of the generate() timing."""
    m = result["model"]
    head = (f"generate(): Llama {m['num_hidden_layers']} layers, hidden {m['hidden_size']}, "
            f"h/hk {m['num_attention_heads']}/{m['num_key_value_heads']}, {m['dtype']}, batch "
            f"{m['batch']}, prompt {m['prompt']}, {m['new_tokens']} new tokens (greedy)")
    if result["error"]:
        return f"{head}: not run ({result['error']})"
    lines = [head]
    sdpa = next((r for r in result["rows"] if r["backend"] == "sdpa"), None)
    for r in result["rows"]:
        ratio = f", {sdpa['ms'] / r['ms']:.2f}x sdpa" if sdpa and r is not sdpa else ""
        lines.append(f"  {r['backend']:>5}: {r['ms']:.1f} ms, {r['tokens_per_s']:.0f} tokens/s{ratio}")
    first = result["rows"][0]["first_difference"] if result["rows"] else None
    lines.append("  tokens equal sdpa's" if first is None else
                 f"  tokens differ from sdpa's from new token {first} on (near-ties of random "
                 "weights in low precision; tests/test_decode.py checks greedy validity)")
    return "\n".join(lines)
