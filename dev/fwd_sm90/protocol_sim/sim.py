"""Replay of the synchronization of the ping-pong sm90 forward
(csrc/cuda/sm90/fa_fwd_sm90_kernel.cuh, branch sm90-fwd-pingpong, head 7896d32; since split into
fa_fwd_sm90_producer.cuh and fa_fwd_sm90_consumer.cuh), in code order.

Agents: producer warp 0 (its thread 0 issues every TMA), producer warps 1..3 (they exit after
__syncthreads + setmaxnreg), and every consumer WARP (warps of one warpgroup drift apart freely).
Asynchronous events chosen at random among the runnable ones: a TMA load lands; a wgmma group
of a warpgroup completes (only after all W warps of the warpgroup issued it: .sync.aligned, the
tensor core starts a warpgroup's wgmma once every warp issued it; groups of a warpgroup complete
in order).

Hardware named barriers (PTX ISA, barrier{.cta}): per barrier an arrival count in threads; a
warp's bar.arrive / bar.sync adds 32 (one warp); all arrivals of a phase must name the same thread
count; when the count reaches it the barrier completes, releases its bar.sync waiters and resets.
A warp that executes a second barrier instruction on the same barrier in one phase (arrive then
arrive/sync: the ISA's "care must be taken" rule) is flagged as UB; so is a count above the
expected one. mbarriers: pending arrivals + transaction bytes, phase parity, try_wait.parity.

Checks: deadlock (no agent or event can move, with the blocked set), PTX UB on named barriers,
named barriers not reset at exit (dangling arrivals), mbarrier parity waits that pass on a phase
other than the intended one, TMA into a slot that a wgmma group (issued, not complete) or the
varlen zeroing uses, wgmma reading the wrong tile, the ping-pong order (warpgroup w issues round
r only after every warp of the previous turn passed), TMA / wgmma in flight at exit.

W (warps per warpgroup) is 4 in the real kernel; the exhaustive mode uses W = 1 or 2 with the
barrier thread counts scaled (W warps stand for 128 threads).
"""
import random
import sys

MUT = set()  # deliberate protocol breaks (see MUTATIONS)


class Err(Exception):
    pass


class Deadlock(Err):
    pass


# ------------------------------------------------------------------ programs (kernel code order)
def producer_prog(n, S):
    p = [('nbar', 'sync', 0, 'ALL'), ('rdv', 'setmaxnreg', -1)]
    if n == 0:
        return p + [('exit',)]
    p += [('marrive_tx', 'qf'), ('tma', 'Q', 'Q', 'qf')]
    stage, phase = 0, 0
    for it in range(n):
        for kind in ('k', 'v'):
            # thread_fill_slot: wait empty (parity phase ^ 1), arrive.expect_tx full, TMA
            p.append(('mwait', (kind + 'e', stage), phase ^ 1, it // S - 1))
            p.append(('marrive_tx', (kind + 'f', stage)))
            p.append(('tma', (kind.upper(), stage), it, (kind + 'f', stage)))
        stage += 1
        if stage == S:
            stage, phase = 0, phase ^ 1
    return p + [('exit',)]


def consumer_prog(n, S, kwg, wg, varlen_tail, pp=True):
    SCHED = 5
    CNT = 128 if 'count128' in MUT else 256  # thread count of the turn barriers
    mine = SCHED + wg
    nxt = SCHED + (wg + 1) % kwg
    p = [('nbar', 'sync', 0, 'ALL'), ('rdv', 'setmaxnreg', wg)]
    if n > 0:
        stage, phase = 0, 0
        p.append(('mwait', 'qf', 0, 0))
        p.append(('mwait', ('kf', 0), 0, 0))
        if varlen_tail:
            p.append(('mwait', ('vf', 0), 0, 0))
            p.append(('zero', ('V', 0), 0))
            p.append(('nbar', 'sync', 4, kwg * 128))
        if pp and (wg != 0 or 'wg0_waits_first' in MUT):
            p.append(('nbar', 'sync', mine, CNT))
        if pp and wg == 0 and 'old_open' in MUT:  # 656a224: arrival opens, then the wait
            p.append(('nbar', 'arrive', mine, CNT))
            p.append(('nbar', 'sync', mine, CNT))
        p.append(('issue', 'QK', 0, (('K', 0), 0)))
        if pp and 'no_pass0' not in MUT:
            p.append(('nbar', 'arrive', nxt, CNT, 0))
        p.append(('wwait', 0))
        p.append(('marrive', ('ke', 0)))
        for it in range(1, n):
            pstage, pphase = stage, phase
            stage += 1
            if stage == S:
                stage, phase = 0, phase ^ 1
            p.append(('mwait', ('kf', stage), phase, it // S))
            if pp:
                p.append(('nbar', 'sync', mine, CNT))
            p.append(('issue', 'QK', it, (('K', stage), it)))
            p.append(('mwait', ('vf', pstage), pphase, (it - 1) // S))
            p.append(('issue', 'PV', it, (('V', pstage), it - 1)))
            if pp and 'pass_after_wait' not in MUT:
                p.append(('nbar', 'arrive', nxt, CNT, it))
            p.append(('wwait', 1))
            p.append(('marrive', ('ke', stage)))
            p.append(('wwait', 0))
            if pp and 'pass_after_wait' in MUT:
                p.append(('nbar', 'arrive', nxt, CNT, it))
            p.append(('marrive', ('ve', pstage)))
        p.append(('mwait', ('vf', stage), phase, (n - 1) // S))
        p.append(('issue', 'PV', n, (('V', stage), n - 1)))
        p.append(('wwait', 0))
        p.append(('marrive', ('ve', stage)))
        if pp and (wg == 0 or 'close_all' in MUT) and 'no_close' not in MUT:
            p.append(('nbar', 'sync', mine, CNT))
    # epilogue: O staged in the warpgroup's Q rows, bar.sync(1 + wg, 128)
    p.append(('nbar', 'sync', 1 + wg, 128))
    if 'issue_rendezvous' in MUT:  # stricter model, not a break: each wgmma issue waits for all warps of the wg
        q = []
        for op in p:
            if op[0] == 'issue':
                q.append(('rdv', ('issue', op[1], op[2]), wg))
            q.append(op)
        p = q
    return p + [('exit',)]


# ------------------------------------------------------------------ persistent grid (fa_fwd_sm90_persist.cuh)
def producer_prog_persist(items, S):
    """The persistent kernel's producer thread: items = key tiles per work item of this CTA. Item k
    uses Q slot k & 1 (its Q-full / Q-empty barriers, its buffer); before its Q the producer waits
    for the slot's previous item's (k - 2) epilogue, then loads Q and every K/V tile of the item."""
    p = [('nbar', 'sync', 0, 'ALL'), ('rdv', 'setmaxnreg', -1)]
    g = 0  # fills so far: the ring position carries over the items

    def fill(k, j):
        nonlocal g
        stage, phase = g % S, (g // S) & 1
        for kind in ('k', 'v'):
            p.append(('mwait', (kind + 'e', stage), phase ^ 1, g // S - 1))
            p.append(('marrive_tx', (kind + 'f', stage)))
            p.append(('tma', (kind.upper(), stage), (k, j), (kind + 'f', stage)))
        g += 1

    for k, n in enumerate(items):
        s, u = k & 1, k >> 1
        buf = ('Q', 0) if 'same_slot' in MUT else ('Q', s)  # same_slot: one buffer, two barrier pairs
        if 'no_qempty' not in MUT:  # the consumers read item k - 2's O out of this slot
            p.append(('mwait', ('qe', s), (u & 1) ^ 1, u - 1))
        if n == 0:
            if 'zero_silent' not in MUT:
                p.append(('marrive', ('qf', s)))  # the item's Q-full phase without a load
            continue
        p += [('marrive_tx', ('qf', s)), ('tma', buf, ('Q', k), ('qf', s))]
        for j in range(n):
            fill(k, j)
    return p + [('exit',)]


def consumer_prog_persist(items, S, kwg, wg, pp=True, q=0):
    """A consumer warp (q: its index in the warpgroup) of the persistent kernel: per item the
    one-block kernel's key-tile loop (ring position and ping-pong rounds continued) on the item's Q
    slot, then the epilogue: O staged in that slot, bar.sync(1 + wg), and warp q = 0 (the thread
    that issues the warpgroup's O TMA store) issues the store, which reads the slot asynchronously.
    The slot's Q-empty arrival of every warp comes in the NEXT item, after its tile 0's QK issue
    (no key tiles: after its Q-full wait), the issuing warp's after cp.async.bulk.wait_group.read 0
    ('owait'); after the last item the issuing warp only waits."""
    SCHED, CNT = 5, 256
    mine, nxt = SCHED + wg, SCHED + (wg + 1) % kwg
    p = [('nbar', 'sync', 0, 'ALL'), ('rdv', 'setmaxnreg', wg)]
    g = 0   # ring position (tiles consumed so far)
    r0 = 0  # ping-pong rounds so far
    step = 'no_ring_step' not in MUT
    issuer = q == 0

    def release_prev(k):
        """warp_release_staged_slot of item k - 1's slot (if any)"""
        if k == 0:
            return
        if issuer and 'no_owait' not in MUT:
            p.append(('owait',))
        p.append(('marrive', ('qe', (k - 1) & 1)))

    for k, n in enumerate(items):
        s, u = k & 1, k >> 1
        buf = ('Q', 0) if 'same_slot' in MUT else ('Q', s)
        if n == 0:
            if 'zero_silent' not in MUT:
                p.append(('mwait', ('qf', s), u & 1, u))
            release_prev(k)
        else:
            qop = ((buf, ('Q', k)),)
            p.append(('mwait', ('qf', s), u & 1, u))
            p.append(('mwait', ('kf', g % S), (g // S) & 1, g // S))
            if pp and wg != 0:
                p.append(('nbar', 'sync', mine, CNT))
            p.append(('issue', 'QK', r0, (('K', g % S), (k, 0)), qop))
            if pp:
                p.append(('nbar', 'arrive', nxt, CNT, r0))
            release_prev(k)
            p.append(('wwait', 0))
            p.append(('marrive', ('ke', g % S)))
            for j in range(1, n):
                pg_ = g
                g += 1
                p.append(('mwait', ('kf', g % S), (g // S) & 1, g // S))
                if pp:
                    p.append(('nbar', 'sync', mine, CNT))
                p.append(('issue', 'QK', r0 + j, (('K', g % S), (k, j)), qop))
                p.append(('mwait', ('vf', pg_ % S), (pg_ // S) & 1, pg_ // S))
                p.append(('issue', 'PV', r0 + j, (('V', pg_ % S), (k, j - 1))))
                if pp:
                    p.append(('nbar', 'arrive', nxt, CNT, r0 + j))
                p.append(('wwait', 1))
                p.append(('marrive', ('ke', g % S)))
                p.append(('wwait', 0))
                p.append(('marrive', ('ve', pg_ % S)))
            p.append(('mwait', ('vf', g % S), (g // S) & 1, g // S))
            p.append(('issue', 'PV', r0 + n, (('V', g % S), (k, n - 1))))
            p.append(('wwait', 0))
            p.append(('marrive', ('ve', g % S)))
            if pp and wg == 0:
                p.append(('nbar', 'sync', mine, CNT))
            if step:
                g += 1
            r0 += n
        # epilogue: O written into this warpgroup's rows of the slot (generic writes done and
        # fenced before the barrier), bar.sync(1 + wg), the issuing warp's TMA store of those rows
        p.append(('ouse', buf, k))
        p.append(('ofree', buf, k))
        if 'no_obar' not in MUT:
            p.append(('nbar', 'sync', 1 + wg, 128))
        if issuer:
            p.append(('ostore', buf, k))
    if issuer and items and 'no_final_owait' not in MUT:
        p.append(('owait',))  # shared memory must outlive the last store's read
    return p + [('exit',)]


# ------------------------------------------------------------------ machine
class MBar:
    __slots__ = ('name', 'count', 'pending', 'tx', 'completed')

    def __init__(self, name, count):
        self.name, self.count, self.pending, self.tx, self.completed = name, count, count, 0, 0

    def _check(self):
        if self.pending < 0:
            raise Err(f'{self.name}: more arrivals than expected in a phase')
        if self.pending == 0 and self.tx == 0:
            self.completed += 1
            self.pending = self.count

    def key(self):
        return (self.pending, self.tx, self.completed)


class NBar:
    """PTX hardware barrier: arrival count in threads, expected count of the phase, who arrived."""
    __slots__ = ('id', 'count', 'expect', 'arrived', 'gen')

    def __init__(self, i):
        self.id, self.count, self.expect, self.arrived, self.gen = i, 0, None, (), 0


def sim(n, kwg, S=2, W=4, varlen_tail=False, seed=0, pp=True, speeds=None, trace=False, items=None):
    """items: None for the one-block kernel (n key tiles), else the persistent kernel with one CTA
    walking work items of items[k] key tiles each."""
    rng = random.Random(seed)
    nprod = W  # producer warpgroup: W warps (warp 0 carries the TMA thread)
    total_threads = (kwg + 1) * 128
    thr_per_warp = 128 // W  # W warps stand for a warpgroup's 128 threads
    agents = {}
    agents[('P', 0)] = producer_prog(n, S) if items is None else producer_prog_persist(items, S)
    for q in range(1, nprod):
        agents[('P', q)] = [('nbar', 'sync', 0, 'ALL'), ('rdv', 'setmaxnreg', -1), ('exit',)]
    for wg in range(kwg):
        for q in range(W):
            agents[(wg, q)] = (consumer_prog(n, S, kwg, wg, varlen_tail, pp) if items is None
                               else consumer_prog_persist(items, S, kwg, wg, pp, q))
    names = list(agents)
    pc = {a: 0 for a in names}
    mb = {'qf': MBar('Q-full', 1)}  # the one-block kernel's; the persistent one has one per Q slot:
    for qs in range(2):
        mb[('qf', qs)] = MBar(f'Q-full{qs}', 1)
        mb[('qe', qs)] = MBar(f'Q-empty{qs}', W * kwg)
    q_users = {}        # Q buffer -> warps between writing O into it and their last access to it
    ostores = []        # O TMA stores still reading their staging: (buf, wg, item, issuing agent)
    for s in range(S):
        mb[('kf', s)] = MBar(f'K-full{s}', 1)
        mb[('vf', s)] = MBar(f'V-full{s}', 1)
        mb[('ke', s)] = MBar(f'K-empty{s}', W * kwg)
        mb[('ve', s)] = MBar(f'V-empty{s}', W * kwg)
    nb = {i: NBar(i) for i in range(16)}
    nb['rdv'] = NBar('rdv')  # never completes: rendezvous waiters are released explicitly
    blocked_nbar = {}   # agent -> (barrier id, generation it waits past)
    rdv = {}            # rendezvous tag -> set of agents arrived
    content, inflight = {}, {}   # smem buffer -> tile tag
    tma_q = []          # (buf, tag, bar)
    groups = {wg: [] for wg in range(kwg)}  # per wg: list of dicts {id, bufs, issued:set, done}
    wg_issued = {a: 0 for a in names}      # groups issued by this warp
    wg_done = {wg: 0 for wg in range(kwg)}  # groups completed (in order) per wg
    passed = {}         # turn index -> warps that passed it
    log = []
    sp = speeds or {}
    speed = {a: sp.get(a, 1.0) for a in names}
    ostore_speed = sp.get('ostore', 1.0)  # weight of an O store's read completing (slow ones find races)

    def turn(wg, r):
        return r * kwg + wg

    def op_of(a):
        return agents[a][pc[a]]

    def runnable(a):
        op = op_of(a)
        k = op[0]
        if k == 'exit':
            return False
        if a in blocked_nbar:
            i, g = blocked_nbar[a]
            return nb[i].gen > g
        if k == 'mwait':
            b = mb[op[1]]
            return (b.completed & 1) != op[2]
        if k == 'wwait':
            wg = a[0]
            return wg_done[wg] >= wg_issued[a] - op[1]
        if k == 'owait':  # cp.async.bulk.wait_group.read 0: this thread's stores have read smem
            return not any(x[3] == a for x in ostores)
        if k == 'rdv':
            return True
        return True

    def do_nbar(a, op):
        _, kind, i, cnt = op[:4]
        if len(op) > 4:  # the pass of turn (round op[4], this warpgroup)
            passed.setdefault(turn(a[0], op[4]), set()).add(a[1])
        if cnt == 'ALL':
            cnt = total_threads
        b = nb[i]
        if b.expect is not None and b.expect != cnt:
            raise Err(f'PTX UB: barrier {i} phase expects {b.expect} threads, {a} {kind}s with {cnt}')
        if any(x == a for x, _ in b.arrived):
            raise Err(f'PTX UB: {a} executes bar.{kind} on barrier {i} after its bar.arrive, before the reset '
                      f'(phase {b.gen}, arrived {b.arrived})')
        b.expect = cnt
        b.arrived = b.arrived + ((a, kind),)
        b.count += thr_per_warp
        if b.count > cnt:
            raise Err(f'PTX: barrier {i} count {b.count} > {cnt}')
        if b.count == cnt:
            if trace:
                log.append(f'  nbar {i} phase {b.gen} completes: {b.arrived}')
            b.gen += 1
            b.count, b.expect, b.arrived = 0, None, ()
            return False  # the completing warp does not wait
        if kind == 'sync':
            blocked_nbar[a] = (i, b.gen)
            return True   # stays on this op until released
        return False

    steps = 0
    while True:
        steps += 1
        if steps > 5_000_000:
            raise Err('step limit')
        cand = [a for a in names if runnable(a)]
        ev = [('a', a) for a in cand]
        ev += [('t', j) for j in range(len(tma_q))]
        ev += [('o', j) for j in range(len(ostores))]
        for wg in range(kwg):
            g = groups[wg]
            if g and len(g[0]['issued']) == W:
                ev.append(('g', wg))
        if not ev:
            if all(op_of(a)[0] == 'exit' for a in names):
                break
            blk = {}
            for a in names:
                op = op_of(a)
                if op[0] != 'exit':
                    blk.setdefault(str(op), []).append(a)
            nbs = {i: (b.count, b.arrived) for i, b in nb.items() if b.count}
            raise Deadlock(f'DEADLOCK after {steps} steps: blocked {blk}; named barriers {nbs}; '
                           f'mbar completed {dict((b.name, b.completed) for b in mb.values())}')
        if ostores and all(op_of(a)[0] == 'exit' for a in names):
            raise Err(f'O store still reading shared memory when the block exits: {ostores}')
        w = [speed[x[1]] if x[0] == 'a' else ostore_speed if x[0] == 'o' else 1.0 for x in ev]
        kind, x = rng.choices(ev, w)[0]
        if kind == 't':
            buf, tag, bar = tma_q.pop(x)
            content[buf] = tag
            del inflight[buf]
            b = mb[bar]
            b.tx -= 1
            b._check()
            continue
        if kind == 'o':  # an O store finished reading its staging
            ostores.pop(x)
            continue
        if kind == 'g':
            g = groups[x].pop(0)
            wg_done[x] += 1
            if trace:
                log.append(f'  wg{x} group {g["id"]} {g["what"]} completes')
            continue
        a = x
        op = op_of(a)
        k = op[0]
        if trace:
            log.append(f'{a}: {op}')
        if a in blocked_nbar:   # released from a bar.sync
            del blocked_nbar[a]
            pc[a] += 1
            continue
        if k == 'nbar':
            if do_nbar(a, op):
                continue
        elif k == 'rdv':
            key = op[2]
            members = [b for b in names if (b[0] == 'P' if key == -1 else b[0] == key)]
            st = rdv.setdefault((key, op[1]), set())
            if a in st:
                continue
            st.add(a)
            if len(st) < len(members):
                # wait at the rendezvous: model as staying until all arrive
                blocked_nbar[a] = ('rdv', 0)
                continue
            else:
                for b in st:
                    if b in blocked_nbar and blocked_nbar[b][0] == 'rdv':
                        del blocked_nbar[b]
                        pc[b] += 1
                del rdv[(key, op[1])]
        elif k == 'mwait':
            b = mb[op[1]]
            intended = op[3]
            if intended < 0:
                if b.completed != 0:
                    raise Err(f'{a}: {b.name} fresh-pass wait at completed={b.completed}')
            elif b.completed != intended + 1:
                raise Err(f'{a}: wait on {b.name} passed at completed={b.completed}, wants phase {intended}')
        elif k == 'marrive':
            b = mb[op[1]]
            b.pending -= 1
            b._check()
        elif k == 'marrive_tx':
            b = mb[op[1]]
            b.tx += 1
            b.pending -= 1
            b._check()
        elif k == 'tma':
            _, buf, tag, bar = op
            for wg in range(kwg):
                for g in groups[wg]:
                    if buf in g['bufs']:
                        raise Err(f'RACE: TMA {buf} tile {tag} while wgmma {g["what"]} of wg{wg} uses it')
            if buf in inflight:
                raise Err(f'RACE: two TMA into {buf}')
            if q_users.get(buf):
                raise Err(f'RACE: TMA {buf} {tag} while {sorted(q_users[buf])} stage O in that Q buffer')
            for ob, owg, oit, _ in ostores:
                if ob == buf:
                    raise Err(f'RACE: TMA {buf} {tag} while the O store of item {oit} (wg{owg}) reads it')
            inflight[buf] = tag
            tma_q.append((buf, tag, bar))
        elif k == 'zero':
            _, buf, tag = op
            if buf in inflight or content.get(buf) != tag:
                raise Err(f'RACE: {a} zeroes {buf} holding {content.get(buf)} (in flight {inflight.get(buf)})')
        elif k == 'issue':
            _, what, r, (buf, tag) = op[:4]
            extra = op[4] if len(op) > 4 else ()  # further operands read, (buffer, tag)
            for xb, xt in extra:
                if xb in inflight or content.get(xb) != xt:
                    raise Err(f'WRONG DATA: {a} {what} reads {xb}={content.get(xb)}, wants {xt}')
            wg = a[0]
            if pp and what == 'QK':
                T = turn(wg, r)
                if T > 0 and len(passed.get(T - 1, ())) != W:
                    raise Err(f'ORDER: {a} issues QK of round {r} (turn {T}) before turn {T - 1} passed '
                              f'({passed.get(T - 1)})')
            if buf in inflight or content.get(buf) != tag:
                raise Err(f'WRONG DATA: {a} {what} reads {buf}={content.get(buf)}, wants tile {tag}')
            gid = wg_issued[a]
            glist = groups[wg]
            idx = gid - wg_done[wg]
            if idx == len(glist):
                glist.append({'id': gid, 'what': (what, r), 'bufs': {buf} | {xb for xb, _ in extra},
                              'issued': set()})
            g = glist[idx]
            if g['what'] != (what, r):
                raise Err(f'wgmma mismatch in wg{wg}: {a} issues {what}{r}, group {gid} is {g["what"]}')
            g['issued'].add(a[1])
            wg_issued[a] += 1
        elif k == 'ouse':
            _, buf, item = op
            if buf in inflight:
                raise Err(f'RACE: {a} stages O of item {item} in {buf} while TMA {inflight[buf]} writes it')
            for wg in range(kwg):
                for g in groups[wg]:
                    if buf in g['bufs'] and wg == a[0]:
                        raise Err(f'RACE: {a} stages O of item {item} in {buf} while wgmma {g["what"]} reads it')
            for ob, owg, oit, _ in ostores:
                if ob == buf and owg == a[0]:
                    raise Err(f'RACE: {a} stages O of item {item} in {buf} while the O store of item {oit} reads it')
            q_users.setdefault(buf, set()).add(a)
        elif k == 'ofree':
            q_users[op[1]].discard(a)
        elif k == 'ostore':
            _, buf, item = op
            writers = sorted(x for x in q_users.get(buf, ()) if x[0] == a[0])
            staged = [x for x in names if x[0] == a[0] and any(o[0] == 'ofree' and o[2] == item
                                                              for o in agents[x][:pc[x]])]
            if writers or len(staged) != W:
                raise Err(f'RACE: {a} issues the O store of item {item} from {buf} before every warp of its '
                          f'warpgroup staged its rows (done: {staged}, writing: {writers})')
            ostores.append((buf, a[0], item, a))
        elif k == 'owait':
            pass
        elif k == 'wwait':
            pass
        pc[a] += 1
    # exit checks
    for i, b in nb.items():
        if b.count:
            raise Err(f'UNBALANCED: named barrier {i} left with {b.count} arrived threads {b.arrived} at exit')
    if tma_q or inflight:
        raise Err(f'TMA in flight at exit {inflight}')
    if ostores:
        raise Err(f'O store still reading shared memory at exit: {ostores}')
    for wg in range(kwg):
        if groups[wg]:
            raise Err(f'wgmma of wg{wg} in flight at exit')
    return steps, log


MUTATIONS = ['wg0_waits_first', 'no_close', 'close_all', 'count128', 'no_pass0', 'old_open']
# pass_after_wait (the pass after wgmma.wait<0>) is a slower but valid order: not a mutation


def random_speeds(rng, kwg, W):
    sp = {}
    for wg in list(range(kwg)) + ['P']:
        for q in range(W):
            sp[(wg, q)] = rng.choice([0.02, 0.2, 1.0, 1.0, 5.0, 50.0])
    sp['ostore'] = rng.choice([0.002, 0.02, 1.0])
    return sp


def campaign(nseeds, ns, kwgs=(2, 3), stages=(2, 3), W=4, quiet=False):
    tot = fails = 0
    worst = {}
    for kwg in kwgs:
        for S in stages:
            for n in ns:
                for vt in (False, True):
                    for sd in range(nseeds):
                        rng = random.Random(sd * 7919 + n)
                        sp = random_speeds(rng, kwg, W) if sd % 3 else None
                        tot += 1
                        try:
                            sim(n, kwg, S, W, vt, seed=sd, speeds=sp)
                        except Err as e:
                            fails += 1
                            key = type(e).__name__ + ':' + str(e).split(':')[0]
                            if key not in worst:
                                worst[key] = (kwg, S, n, vt, sd, str(e)[:400])
    return tot, fails, worst


PERSIST_MUTATIONS = ['no_qempty', 'zero_silent', 'no_ring_step', 'same_slot', 'no_owait', 'no_obar',
                     'no_final_owait']


def random_items(rng):
    """Key tiles per work item of one CTA: 1..6 items, some without key tiles."""
    return [rng.choice([0, 0, 1, 2, 3, 5]) for _ in range(rng.randint(1, 6))]


def campaign_persist(nseeds, kwgs=(2, 3), stages=(2, 3), W=4):
    tot = fails = 0
    worst = {}
    for kwg in kwgs:
        for S in stages:
            for sd in range(nseeds):
                rng = random.Random(sd * 104729 + 31 * kwg + S)
                items = random_items(rng)
                sp = random_speeds(rng, kwg, W) if sd % 3 else None
                tot += 1
                try:
                    sim(0, kwg, S, W, seed=sd, speeds=sp, items=items)
                except Err as e:
                    fails += 1
                    key = type(e).__name__ + ':' + str(e).split(':')[0]
                    if key not in worst:
                        worst[key] = (kwg, S, items, sd, str(e)[:400])
    return tot, fails, worst


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'persist':
        nseeds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
        tot, fails, worst = campaign_persist(nseeds)
        print(f'persistent grid, W=4, kWG 2,3, kStages 2,3, 1..6 items of 0..5 tiles: '
              f'{tot - fails}/{tot} runs complete with every check passing')
        for k, v in worst.items():
            print('  FAIL', k, v)
        for m in PERSIST_MUTATIONS:
            MUT.clear()
            MUT.add(m)
            tot, fails, worst = campaign_persist(max(10, nseeds // 5))
            print(f'mutation {m}: {fails}/{tot} runs flagged')
            for k, v in list(worst.items())[:2]:
                print('   e.g.', k, v)
        sys.exit(0)

    nseeds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    ns = list(range(0, 41))
    tot, fails, worst = campaign(nseeds, ns)
    print(f'branch protocol, W=4 warps/wg, kWG 2,3, kStages 2,3, n_tiles 0..40, varlen tail on/off: '
          f'{tot - fails}/{tot} runs complete with every check passing')
    for k, v in worst.items():
        print('  FAIL', k, v)
    MUT.add('issue_rendezvous')
    tot, fails, worst = campaign(max(3, nseeds // 5), ns, stages=(2,))
    print(f'stricter model (each wgmma issue a rendezvous of the warpgroup): {tot - fails}/{tot} complete')
    for m in MUTATIONS:
        MUT.clear()
        MUT.add(m)
        tot, fails, worst = campaign(max(3, nseeds // 10), [1, 2, 3, 7, 40], stages=(2,))
        print(f'mutation {m}: {fails}/{tot} runs flagged')
        for k, v in list(worst.items())[:2]:
            print('   e.g.', k, v)
    MUT.clear()
