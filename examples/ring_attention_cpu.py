"""Ring attention on CPU with gloo: every rank holds 1/world of the sequence.

    torchrun --standalone --nproc_per_node 2 examples/ring_attention_cpu.py

Each rank builds the same random q, k, v (fixed seed), keeps its contiguous shard, runs
ring_flash_attn_func forward and backward, and checks its shard of the output and of dq against
flash_attn_func on the whole sequence. The same script runs on GPUs with backend "nccl" and
CUDA tensors.
"""
import torch
import torch.distributed as dist

from flash_attn_c import flash_attn_func
from flash_attn_c.distributed import ring_flash_attn_func, ring_shard

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
b, s, h, hk, d = 2, 256 * world, 8, 2, 64  # GQA: 8 query heads share 2 K/V heads
q = torch.randn(b, s, h, d)
k, v = torch.randn(b, s, hk, d), torch.randn(b, s, hk, d)
dout = torch.randn(b, s, h, d)

# this rank's shard: positions [rank * s / world, (rank + 1) * s / world)
q_l, k_l, v_l = (ring_shard(x, dim=1).clone().requires_grad_() for x in (q, k, v))
out = ring_flash_attn_func(q_l, k_l, v_l, causal=True)
out.backward(ring_shard(dout, dim=1))

# the same attention in one process, on the whole sequence
q_f = q.clone().requires_grad_()
ref = flash_attn_func(q_f, k, v, causal=True)
ref.backward(dout)
err_out = (out - ring_shard(ref, dim=1)).abs().max().item()
err_dq = (q_l.grad - ring_shard(q_f.grad, dim=1)).abs().max().item()
assert err_out < 1e-5 and err_dq < 1e-5, (err_out, err_dq)
print(f"rank {rank}/{world}: out {tuple(out.shape)} matches flash_attn_func "
      f"(max err out {err_out:.1e}, dq {err_dq:.1e})")
dist.destroy_process_group()
