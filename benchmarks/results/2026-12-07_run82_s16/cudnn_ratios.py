import json,math,sys
from collections import defaultdict
r=json.load(open(sys.argv[1]))['results']
t=defaultdict(dict)
for e in r:
    if e['status']!='ok': continue
    t[(e['direction'],e['head_dim'],e['causal'],e['seqlen'])][e['backend']]=e['ms']
for dr in ('fwd','bwd','fwdbwd'):
    rs=[(v['sdpa_cudnn']/v['ours'],k) for k,v in t.items() if k[0]==dr and 'ours' in v and 'sdpa_cudnn' in v]
    g=math.exp(sum(math.log(x) for x,_ in rs)/len(rs))
    print(dr, 'geomean ours/cudnn %.4f'%g, 'min %.3f %s'%min(rs), len(rs))
