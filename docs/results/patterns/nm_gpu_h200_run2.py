import torch,time,json,statistics as S,warnings
warnings.filterwarnings("ignore")
import torch.nn.functional as F
from torch.sparse import to_sparse_semi_structured as T
o={"torch":torch.__version__,"cusparselt":torch.backends.cusparselt.version()}
def tm(f):
 torch.cuda.synchronize();t=time.perf_counter()
 for _ in range(50):f()
 torch.cuda.synchronize();return (time.perf_counter()-t)/50
R={}
h=torch.float16
for (m,k,n) in ((64,64,64),(1536,384,4096),(384,1536,4096),(1536,384,65536),(384,1536,65536),(8192,8192,8192)):
 for how in ("mm","linear"):
  key=f"{how} {m}x{k}x{n}"
  try:
   w=torch.randn(m,k,device="cuda",dtype=h);mk=torch.tensor([1,1,0,0],device="cuda",dtype=torch.bool).repeat(m,k//4);wd=w*mk;s=T(wd)
   if how=="mm":x=torch.randn(k,n,device="cuda",dtype=h);a=lambda:torch.mm(wd,x);b=lambda:torch.mm(s,x)
   else:x=torch.randn(n,k,device="cuda",dtype=h);a=lambda:F.linear(x,wd);b=lambda:F.linear(x,s)
   a();b();td,ts=[],[]
   for r in range(10):td.append(tm(a));ts.append(tm(b))
   rt=sorted(p/q for p,q in zip(td,ts))
   R[key]={"dense_us":round(S.median(td)*1e6,1),"sparse_us":round(S.median(ts)*1e6,1),"speedup":round(S.median(rt),3),"iqr":[round(rt[2],3),round(rt[7],3)]}
  except Exception as e:R[key]=f"{type(e).__name__}: {str(e).splitlines()[0][:150]}"
o["results"]=R;print(json.dumps(o))
