import torch,time,json,statistics as S
from torch.sparse import to_sparse_semi_structured as T, SparseSemiStructuredTensor as SS
o={"torch":torch.__version__,"gpu":torch.cuda.get_device_name(),"cap":torch.cuda.get_device_capability()}
try:T(torch.randn(64,64).half());o["cpu"]="ok"
except Exception as e:o["cpu"]=str(e).splitlines()[0]
def tm(f):
 torch.cuda.synchronize();t=time.perf_counter()
 for _ in range(50):f()
 torch.cuda.synchronize();return (time.perf_counter()-t)/50
R={}
for cut in (False,True):
 SS._FORCE_CUTLASS=cut
 for dt in (torch.float16,torch.bfloat16):
  for (m,k,n) in ((1536,384,4096),(384,1536,4096),(4096,4096,4096),(8192,8192,8192)):
   key=f"{'cutlass' if cut else 'default'} {str(dt)[6:]} {m}x{k}x{n}"
   try:
    w=torch.randn(m,k,device="cuda",dtype=dt);mk=torch.tensor([1,1,0,0],device="cuda",dtype=torch.bool).repeat(m,k//4);wd=w*mk
    s=T(wd);x=torch.randn(k,n,device="cuda",dtype=dt)
    err=float((torch.mm(s,x)-torch.mm(wd,x)).abs().max()/torch.mm(wd,x).abs().max())
    a=lambda:torch.mm(wd,x);b=lambda:torch.mm(s,x);a();b()
    td,ts=[],[]
    for r in range(10):td.append(tm(a));ts.append(tm(b))
    rt=sorted(p/q for p,q in zip(td,ts))
    R[key]={"dense_us":round(S.median(td)*1e6,1),"sparse_us":round(S.median(ts)*1e6,1),"speedup":round(S.median(rt),3),"iqr":[round(rt[2],3),round(rt[7],3)],"rel_err":err,"backend":type(s).__name__}
   except Exception as e:R[key]=f"{type(e).__name__}: {str(e).splitlines()[0][:150]}"
o["results"]=R;print(json.dumps(o,indent=0))
