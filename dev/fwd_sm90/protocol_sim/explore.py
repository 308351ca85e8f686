"""Exhaustive interleavings of the ping-pong protocol for small cases (every order of every warp's
next step, every TMA landing, every wgmma group completion), on the same programs as sim.py.
W warps per warpgroup (1 or 2) stand for its 128 threads; barrier counts scale with them.
Reports the number of distinct states, and any deadlock / check failure with its trace.
"""
import sys
from sim import producer_prog, consumer_prog, MUT, Err


def explore(n, kwg, S=2, W=1, varlen_tail=False, limit=3_000_000):
    total_threads = (kwg + 1) * 128
    tpw = 128 // W
    progs = [producer_prog(n, S)] + [[('nbar', 'sync', 0, 'ALL'), ('rdv', 'setmaxnreg', -1), ('exit',)]] * (W - 1)
    names = [('P', q) for q in range(W)]
    for wg in range(kwg):
        for q in range(W):
            progs.append(consumer_prog(n, S, kwg, wg, varlen_tail))
            names.append((wg, q))
    A = len(progs)
    members = {}
    for i, nm in enumerate(names):
        members.setdefault(-1 if nm[0] == 'P' else nm[0], []).append(i)
    # index of each warp's pass (bar.arrive) of round r
    pass_idx = {}
    for i, p in enumerate(progs):
        for j, op in enumerate(p):
            if op[0] == 'nbar' and len(op) > 4:
                pass_idx[(i, op[4])] = j
    mbn = ['qf'] + [(k, s) for s in range(S) for k in ('kf', 'vf', 'ke', 've')]
    mbi = {b: j for j, b in enumerate(mbn)}
    mcount = [1] + [1 if k in ('kf', 'vf') else W * kwg for s in range(S) for k in ('kf', 'vf', 'ke', 've')]
    # state: (pcs, mbars (pending, tx, completed), nbars {id: (count, expect, arrived)}, rdv arrived,
    #         content, inflight tma, groups per wg (what, buf, issued) tuple, wg_issued per agent, wg_done)
    init = (tuple([0] * A), tuple((c, 0, 0) for c in mcount), (), (), (), (), tuple(() for _ in range(kwg)),
            tuple([0] * A), tuple([0] * kwg))
    seen = {init: None}
    stack = [init]
    deadlocks = 0

    def trace(st):
        out = []
        while seen[st] is not None:
            st, lab = seen[st]
            out.append(lab)
        return out[::-1]

    while stack:
        st = stack.pop()
        pcs, mbs, nbs, rdv, content, infl, groups, issued, done = st
        nbs_d = dict(nbs)
        content_d = dict(content)
        succ = []
        # TMA landings
        for t in infl:
            buf, tag, bar = t
            c2 = dict(content_d)
            c2[buf] = tag
            m = list(mbs)
            j = mbi[bar]
            p_, tx, cmp_ = m[j]
            tx -= 1
            if p_ == 0 and tx == 0:
                p_, cmp_ = mcount[j], cmp_ + 1
            m[j] = (p_, tx, cmp_)
            succ.append(((pcs, tuple(m), nbs, rdv, tuple(sorted(c2.items(), key=str)),
                          tuple(x for x in infl if x != t), groups, issued, done), f'TMA {buf} tile {tag} lands'))
        # wgmma group completions (oldest of a warpgroup, once all W warps issued it)
        for wg in range(kwg):
            g = groups[wg]
            if g and len(g[0][2]) == W:
                gr = list(groups)
                gr[wg] = g[1:]
                dn = list(done)
                dn[wg] += 1
                succ.append(((pcs, mbs, nbs, rdv, content, infl, tuple(gr), issued, tuple(dn)),
                             f'wg{wg} wgmma {g[0][0]} completes'))
        # warp steps
        live = False
        for i in range(A):
            op = progs[i][pcs[i]]
            k = op[0]
            if k == 'exit':
                continue
            live = True
            nm = names[i]
            lab = f'{nm}: {op}'
            if k == 'nbar':
                _, kind, bid, cnt = op[:4]
                if cnt == 'ALL':
                    cnt = total_threads
                c, e, arr = nbs_d.get(bid, (0, None, ()))
                if any(x == i for x, _ in arr):
                    if any(x == i and kd == 'arrive' for x, kd in arr):
                        raise Err(f'PTX UB {lab}: second barrier instruction after bar.arrive in one phase; '
                                  f'trace {trace(st)[-30:]}')
                    continue  # blocked in its bar.sync
                if e is not None and e != cnt:
                    raise Err(f'PTX UB {lab}: count {cnt} vs {e}')
                c += tpw
                arr = arr + ((i, kind),)
                pc2 = list(pcs)
                nb2 = dict(nbs_d)
                if c > cnt:
                    raise Err(f'count overflow {lab}')
                if c == cnt:
                    for x, kd in arr:
                        if kd == 'sync' and x != i:
                            pc2[x] += 1  # released
                    pc2[i] += 1
                    nb2.pop(bid, None)
                else:
                    nb2[bid] = (c, cnt, arr)
                    if kind == 'arrive':
                        pc2[i] += 1
                succ.append(((tuple(pc2), mbs, tuple(sorted(nb2.items())), rdv, content, infl, groups, issued,
                              done), lab))
                continue
            if k == 'rdv':
                key = op[2]
                if i in rdv:
                    continue
                r2 = rdv + (i,)
                pc2 = list(pcs)
                mem = members[key]
                if all(x in r2 for x in mem):
                    for x in mem:
                        pc2[x] += 1
                    r2 = tuple(x for x in r2 if x not in mem)
                succ.append(((tuple(pc2), mbs, nbs, tuple(sorted(r2)), content, infl, groups, issued, done), lab))
                continue
            pc2 = list(pcs)
            pc2[i] += 1
            m = mbs
            c2, inf2, gr, iss = content, infl, groups, issued
            if k == 'mwait':
                j = mbi[op[1]]
                cmp_ = mbs[j][2]
                if (cmp_ & 1) == op[2]:
                    continue
                if op[3] < 0 and cmp_ != 0 or op[3] >= 0 and cmp_ != op[3] + 1:
                    raise Err(f'ABA {lab} at completed {cmp_}; trace {trace(st)[-30:]}')
            elif k == 'wwait':
                wg = nm[0]
                if done[wg] < issued[i] - op[1]:
                    continue
            elif k in ('marrive', 'marrive_tx'):
                m = list(mbs)
                j = mbi[op[1]]
                p_, tx, cmp_ = m[j]
                p_ -= 1
                tx += k == 'marrive_tx'
                if p_ < 0:
                    raise Err(f'mbarrier over-arrival {lab}')
                if p_ == 0 and tx == 0:
                    p_, cmp_ = mcount[j], cmp_ + 1
                m[j] = (p_, tx, cmp_)
                m = tuple(m)
            elif k == 'tma':
                _, buf, tag, bar = op
                for wg in range(kwg):
                    for g in groups[wg]:
                        if g[1] == buf:
                            raise Err(f'RACE {lab} while wg{wg} {g[0]} uses it; trace {trace(st)[-30:]}')
                if any(x[0] == buf for x in infl):
                    raise Err(f'RACE two TMA {lab}')
                inf2 = tuple(sorted(infl + ((buf, tag, bar),), key=str))
            elif k == 'zero':
                _, buf, tag = op
                if any(x[0] == buf for x in infl) or content_d.get(buf) != tag:
                    raise Err(f'RACE {lab}')
            elif k == 'issue':
                _, what, r, (buf, tag) = op
                wg = nm[0]
                if what == 'QK':
                    T = r * kwg + wg
                    if T > 0:
                        pw, pr = (T - 1) % kwg, (T - 1) // kwg
                        for x in members[pw]:
                            if pcs[x] <= pass_idx[(x, pr)]:
                                raise Err(f'ORDER {lab} before turn {T - 1} passed; trace {trace(st)[-30:]}')
                if any(x[0] == buf for x in infl) or content_d.get(buf) != tag:
                    raise Err(f'WRONG DATA {lab}: {content_d.get(buf)}')
                idx = issued[i] - done[wg]
                g = list(groups[wg])
                if idx == len(g):
                    g.append(((what, r), buf, ()))
                if g[idx][0] != (what, r):
                    raise Err(f'wgmma mismatch {lab}')
                g[idx] = (g[idx][0], g[idx][1], tuple(sorted(g[idx][2] + (nm[1],))))
                gr = list(groups)
                gr[wg] = tuple(g)
                gr = tuple(gr)
                iss = list(issued)
                iss[i] += 1
                iss = tuple(iss)
            succ.append(((tuple(pc2), m, nbs, rdv, c2, inf2, gr, iss, done), lab))
        if not succ:
            if live:
                deadlocks += 1
                raise Err(f'DEADLOCK at pcs {[(names[i], progs[i][pcs[i]]) for i in range(A)]}; nbars {nbs}; '
                          f'trace (last 40) {trace(st)[-40:]}')
            if nbs:
                raise Err(f'UNBALANCED at exit: {nbs}')
            continue
        for s2, lab in succ:
            if s2 not in seen:
                seen[s2] = (st, lab)
                stack.append(s2)
                if len(seen) > limit:
                    return len(seen), 'LIMIT'
    return len(seen), 'ok'


if __name__ == '__main__':
    cases = [(kwg, W, n, vt) for W in (1, 2) for kwg in (2, 3) for n in (0, 1, 2, 3, 4, 5) for vt in (False, True)
             if not (W == 2 and (n > 3 or kwg == 3 and n > 2)) and not (vt and n == 0)]
    if len(sys.argv) > 1:
        MUT.add(sys.argv[1])
    for kwg, W, n, vt in cases:
        try:
            ns, res = explore(n, kwg, 2, W, vt)
            print(f'kWG {kwg} W {W} n_tiles {n} varlen_tail {vt}: {ns} states, {res}', flush=True)
        except Err as e:
            print(f'kWG {kwg} W {W} n_tiles {n} varlen_tail {vt}: FAIL {str(e)[:1500]}', flush=True)
