"""CPU model of the ordered deterministic dQ of the pipelined Hopper backward
(kDq = FA_BWD_SM90_DQ_ORDERED: csrc/cuda/sm90/fa_bwd_sm90_pipe_dq_order.cuh, warp_write_dq in
fa_bwd_sm90_pipe_dq_writer.cuh).

Two parts:
  1. Turn counts. For every key block n and every query tile m it walks (the kernel's query-side
     band, fa_band_queries + fa_band_tiles), the turn the writer waits for (thread_dq_turn: the
     key-side band fa_band_keys of the tile, its last key block minus n) must equal the number of
     key blocks n' > n that touch m, counted by brute force over the mask (row i sees key j iff
     i + diag - left <= j <= i + diag + right, diag = sk - sq, -1 = unbounded). The kernel's
     tile list is also checked against brute force.
  2. Scheduling. CTAs of the grid (x = key blocks, y = kv heads, z = batch) become resident in
     increasing linear index, at most `resident` at a time (a slot frees when a CTA exits). Per
     CTA: the consumers compute tile c (random time), stage it once the staging buffer is free
     (every earlier tile added: one buffer per warpgroup), the writer adds staged tile k when the
     tile's counter equals its turn (random time), then increments the counter. Checks: no
     deadlock, each tile's adds in strictly decreasing key block over exactly the touching
     blocks, every counter ends at the number of touching blocks. Makespan in tile units.

Mutations (the checks must fail): "forward_map" (blockIdx.x -> n = x with decreasing order:
waits go to later-launched CTAs, deadlock once the grid exceeds the resident CTAs);
"increasing" (increasing key-block order with n = x: deadlock free, slower under causal masks).

python3 sim.py [seeds] [--cost]   random + fixed cases, prints a summary (about 3 s for 20 seeds);
                                  --cost: the ordering's modelled cost at 16k tokens (30 s more).
"""
import heapq
import random
import sys

BR, BC = 64, 128  # fa_bwd_sm90_pipe_cfg<64/128>: Br = 64, Bc = 128


class Deadlock(Exception):
    pass


# ------------------------------------------------------------------ fa_seq.cuh, in Python
def band_keys(r_first, r_last, sq, sk, left, right):
    diag = sk - sq
    lo, hi = 0, sk - 1
    if left >= 0:
        lo = max(lo, r_first + diag - left)
    if right >= 0:
        hi = min(hi, r_last + diag + right)
    return lo, hi


def band_queries(c_first, c_last, sq, sk, left, right):
    diag = sk - sq
    lo, hi = 0, sq - 1
    if right >= 0:
        lo = max(lo, c_first - diag - right)
    if left >= 0:
        hi = min(hi, c_last - diag + left)
    return lo, hi


def band_tiles(lo, hi, tile):
    if lo > hi:
        return 0, 0
    return lo // tile, hi // tile - lo // tile + 1


# ------------------------------------------------------------------ the kernel's view
def kernel_tiles(n, sq, sk, left, right):
    """Query tiles key block n walks (fa_bwd_sm90_pipe_kernel: m_band)."""
    j0 = n * BC
    lo, hi = band_queries(j0, min(j0 + BC, sk) - 1, sq, sk, left, right)
    first, count = band_tiles(lo, hi, BR)
    return list(range(first, first + count))


def kernel_turn(m, n, sq, sk, left, right):
    """thread_dq_turn<Br, Bc>(m, n, ...)."""
    lo, hi = band_keys(m * BR, min(m * BR + BR, sq) - 1, sq, sk, left, right)
    first, count = band_tiles(lo, hi, BC)
    return first + count - 1 - n


def brute_touch(n, m, sq, sk, left, right):
    """Some (row of tile m, key of block n) pair is unmasked."""
    diag = sk - sq
    for i in range(m * BR, min(m * BR + BR, sq)):
        lo = 0 if left < 0 else max(0, i + diag - left)
        hi = sk - 1 if right < 0 else min(sk - 1, i + diag + right)
        if max(lo, n * BC) <= min(hi, min(n * BC + BC, sk) - 1):
            return True
    return False


def check_turns(sq, sk, left, right):
    """Part 1; returns the number of (n, m) pairs checked."""
    nb, mt = (sk + BC - 1) // BC, (sq + BR - 1) // BR
    touch = [[brute_touch(n, m, sq, sk, left, right) for m in range(mt)] for n in range(nb)]
    pairs = 0
    for n in range(nb):
        tiles = kernel_tiles(n, sq, sk, left, right)
        want = [m for m in range(mt) if touch[n][m]]
        assert tiles == want, f"tiles of key block {n}: kernel {tiles} brute {want}"
        for m in tiles:
            truth = sum(1 for n2 in range(n + 1, nb) if touch[n2][m])
            got = kernel_turn(m, n, sq, sk, left, right)
            assert got == truth, f"turn of key block {n} on tile {m}: kernel {got} brute {truth}"
            pairs += 1
    return pairs


# ------------------------------------------------------------------ scheduling
def simulate(sq, sk, h, hk, left, right, batch=1, resident=132, rng=None, mut=(), speed=None, add=0.2):
    """Part 2. Returns (makespan, adds). rng: random.Random (None: unit times). speed: per-CTA
    speed factors drawn by rng (1.0 each when None). add: the time of one tile's adds + hand-over,
    in tile compute times. mut "free": no ordering at all (the atomic dQ's schedule, for the cost)."""
    def dur(base):
        return base * (rng.uniform(0.5, 1.5) if rng is not None else 1.0)

    group = h // hk
    nb = (sk + BC - 1) // BC
    mt = (sq + BR - 1) // BR
    increasing = "increasing" in mut
    forward = "forward_map" in mut or increasing
    touch_cnt = {}  # (b, h, m) -> number of touching key blocks
    ctas = []  # linear order
    for z in range(batch):
        for y in range(hk):
            for x in range(nb):
                n = x if forward else nb - 1 - x
                tiles = kernel_tiles(n, sq, sk, left, right)
                seq = [(z, y * group + g, m) for g in range(group) for m in tiles]
                for key in seq:
                    touch_cnt[key] = touch_cnt.get(key, 0) + 1
                sp = speed(rng) if speed and rng is not None else 1.0
                ctas.append({"n": n, "seq": seq, "c": 0, "k": 0, "staged": 0, "computing": False,
                             "adding": False, "sp": sp, "done": False})
    # turn of CTA on its tile: the touching blocks before it in the chain (cached per (n, m))
    turns = {}

    def turn(cta, key):
        n, m = cta["n"], key[2]
        if (n, m) not in turns:
            if increasing:
                turns[n, m] = sum(1 for n2 in range(n) if m in kernel_tiles(n2, sq, sk, left, right))
            else:
                turns[n, m] = kernel_turn(m, n, sq, sk, left, right)
        return turns[n, m]

    sem = {key: 0 for key in touch_cnt}
    order = {key: [] for key in touch_cnt}
    t = 0.0
    ev = []  # (time, seq, kind, cta index)
    cnt = [0]

    def push(time, kind, ci):
        cnt[0] += 1
        heapq.heappush(ev, (time, cnt[0], kind, ci))

    waiting = {}  # tile -> writers blocked on its counter
    nxt = [0]
    live = [0]

    def admit(now):
        while live[0] < resident and nxt[0] < len(ctas):
            ci = nxt[0]
            nxt[0] += 1
            live[0] += 1
            ctas[ci]["t0"] = now
            step(ci, now)

    def step(ci, now):
        """Start whatever CTA ci can start at time now."""
        c = ctas[ci]
        n_iter = len(c["seq"])
        if c["k"] == n_iter and not c["done"]:
            c["done"] = True
            c["t1"] = now
            live[0] -= 1
            return "exit"
        # consumers: compute the next tile (ring always fed), stage it when the buffer is free
        if not c["computing"] and c["c"] < n_iter and c["c"] == c["staged"]:
            c["computing"] = True
            push(now + c["sp"] * dur(1.0), "computed", ci)
        # writer: the staged tile, when its turn has come
        if not c["adding"] and c["k"] < c["staged"]:
            key = c["seq"][c["k"]]
            if "free" in mut or sem[key] == turn(c, key):
                c["adding"] = True
                order[key].append(c["n"])
                push(now + dur(add), "added", ci)
            else:
                waiting.setdefault(key, set()).add(ci)
        return None

    admit(0.0)
    while True:
        if not ev:
            if all(c["done"] for c in ctas):
                break
            blocked = [(c["n"], c["k"], len(c["seq"])) for c in ctas if not c["done"]]
            raise Deadlock(f"resident {resident}: blocked (n, k, n_iter) {blocked[:6]}")
        t, _, kind, ci = heapq.heappop(ev)
        c = ctas[ci]
        moved = None
        if kind == "computed":
            c["computing"] = False
            c["c"] += 1
            # staging needs every earlier tile added (one buffer per warpgroup)
            c["pending_stage"] = True
        elif kind == "added":
            c["adding"] = False
            key = c["seq"][c["k"]]
            sem[key] += 1
            c["k"] += 1
            moved = key
        # stage if computed and the buffer is free
        if c.get("pending_stage") and c["staged"] == c["k"]:
            c["staged"] += 1
            c["pending_stage"] = False
        exited = step(ci, t) == "exit"
        # a counter moved: retry the writers blocked on it; a slot freed: admit new CTAs
        for wi in sorted(waiting.pop(moved, ())):
            step(wi, t)
        if exited:
            admit(t)
    for key, got in order.items():
        assert len(got) == touch_cnt[key] == sem[key], f"tile {key}: adds {got}, want {touch_cnt[key]}"
        want = sorted(got) if increasing else sorted(got, reverse=True)
        assert "free" in mut or got == want and len(set(got)) == len(got), f"tile {key}: add order {got}"
    busy = sum(c["t1"] - c["t0"] for c in ctas)
    return t, busy, order


# ------------------------------------------------------------------ cases
# (sq, sk, h, hk, left, right): the harness / pytest shapes and the edges of the bands
FIXED = [
    (97, 97, 4, 4, -1, -1), (97, 97, 3, 3, -1, 0), (17, 97, 2, 2, -1, 0), (97, 17, 2, 2, -1, 0),
    (97, 130, 4, 2, -1, 0), (150, 150, 2, 2, 20, 20), (1, 1, 2, 2, -1, -1), (1, 1025, 2, 2, -1, 0),
    (1025, 1025, 2, 2, -1, 0), (1025, 17, 2, 1, -1, -1), (17, 1025, 2, 2, -1, -1),
    (255, 255, 2, 2, 32, 8), (200, 255, 2, 2, 0, 0), (255, 130, 2, 2, -1, 5), (97, 200, 2, 2, 7, -1),
    (1025, 1025, 2, 2, 100, 0), (97, 97, 8, 2, -1, 0), (130, 130, 4, 2, -1, -1), (300, 300, 4, 1, -1, 0),
    (130, 200, 4, 2, -1, 0), (255, 130, 2, 2, 20, 20), (2048, 2048, 8, 2, -1, 0), (129, 129, 4, 1, -1, -1),
]


def random_case(rng):
    sq, sk = rng.randint(1, 1100), rng.randint(1, 1100)
    hk = rng.choice([1, 2, 3])
    h = hk * rng.choice([1, 2, 4])
    left = rng.choice([-1, -1, 0, rng.randint(0, 300)])
    right = rng.choice([-1, 0, 0, rng.randint(0, 300)])
    return sq, sk, h, hk, left, right


def run(seeds=20, verbose=True):
    cases = list(FIXED)
    master = random.Random(1234)
    cases += [random_case(master) for _ in range(4 * seeds)]
    pairs = runs = 0
    for ci, (sq, sk, h, hk, left, right) in enumerate(cases):
        pairs += check_turns(sq, sk, left, right)
        for s in range(max(1, seeds // 10)):
            rng = random.Random(1000 * ci + s)
            nb = (sk + BC - 1) // BC
            for resident in (1, 2, max(1, nb // 2), 132):
                simulate(sq, sk, h, hk, left, right, batch=2, resident=resident, rng=rng,
                         speed=lambda r: r.choice([0.1, 1.0, 1.0, 10.0]))
                runs += 1
    if verbose:
        print(f"turns: {pairs} (key block, query tile) pairs match brute force over {len(cases)} cases")
        print(f"scheduling: {runs} runs (resident 1, 2, grid/2, 132; batch 2; random speeds), "
              f"no deadlock, every tile's adds in decreasing key-block order")
    return pairs, runs


def mutation_deadlocks():
    """forward_map must deadlock (causal, grid above the resident CTAs); returns True if it does."""
    try:
        simulate(1025, 1025, 2, 2, -1, 0, resident=2, rng=random.Random(5), mut=("forward_map",))
    except Deadlock:
        return True
    return False


def critical_path(sq=4096, h=16, hk=16, left=-1, right=0, resident=132):
    """(makespan, CTA-resident time summed) of decreasing order (reversed grid) and of increasing
    order (forward grid), unit compute time per tile, 0.2 per add."""
    dec = simulate(sq, sq, h, hk, left, right, resident=resident, rng=None)[:2]
    inc = simulate(sq, sq, h, hk, left, right, resident=resident, rng=None, mut=("increasing",))[:2]
    return dec, inc


def ordering_cost(sq, right, add, h=16, batch=1, resident=132):
    """Makespan of the ordered schedule over the unordered one with the same (reversed) grid and
    with the forward grid (the atomic-dQ kernel's), unit tile time."""
    kw = dict(batch=batch, resident=resident, rng=None, add=add)
    ordered = simulate(sq, sq, h, h, -1, right, **kw)[0]
    free = simulate(sq, sq, h, h, -1, right, mut=("free",), **kw)[0]
    free_fwd = simulate(sq, sq, h, h, -1, right, mut=("free", "forward_map"), **kw)[0]
    return ordered / free, ordered / free_fwd


if __name__ == "__main__":
    args = [x for x in sys.argv[1:] if x != "--cost"]
    seeds = int(args[0]) if args else 20
    run(seeds)
    print("mutation forward_map deadlocks:", mutation_deadlocks())
    for right, name in ((0, "causal"), (-1, "no mask")):
        for resident in (132, 10 ** 6):
            dec, inc = critical_path(right=right, resident=resident)
            print(f"{name} sq = sk = 4096, h 16, resident {resident}: makespan / CTA time decreasing "
                  f"{dec[0]:.1f} / {dec[1]:.0f}, increasing {inc[0]:.1f} / {inc[1]:.0f} (tile units)")
    for right, name in ((0, "causal"), (-1, "no mask")) if "--cost" in sys.argv else ():
        for sq in (1024, 4096, 16384):
            costs = ", ".join("add {}: {:.3f} / {:.3f}".format(a, *ordering_cost(sq, right, a, h=16, batch=16384 // sq))
                              for a in (0.25, 0.5, 1.0))
            print(f"{name} sq = sk = {sq}, batch {16384 // sq}, 16 heads: ordered / unordered makespan "
                  f"(same grid / forward grid) {costs}")
