import torch,time,statistics,json,warnings
warnings.filterwarnings('ignore')
from typing import Any
def quartiles(values):
 q=statistics.quantiles(values,n=4,method='inclusive')
 return (q[0],q[1],q[2])
def ratio_stats(num,den):
 q1,med,q3=quartiles([a / b for a,b in zip(num,den)])
 return {'median':med,'q1':q1,'q3':q3}
def nm_check(rounds):
 out:dict[str,Any]={'torch':torch.__version__,'cuda_available':torch.cuda.is_available()}
 from torch.sparse import to_sparse_semi_structured
 w=torch.randn(1536,384)
 keep=torch.tensor([1,1,0,0],dtype=torch.bool).repeat(1536,96)
 try:
  to_sparse_semi_structured((w * keep).half())
  out['cpu']='accepted'
 except Exception as exc:
  out['cpu']=f'{type(exc).__name__}:{str(exc).strip().splitlines()[0]}'
 if not torch.cuda.is_available():
  out['gpu']='no CUDA GPU on this machine:2:4 speed not measured'
  return out
 shapes={'ffn_in (4096×384 · 384×1536)':(1536,384),'ffn_out (4096×1536 · 1536×384)':(384,1536)}
 res={}
 for label,(o,i) in shapes.items():
  keep=torch.tensor([1,1,0,0],dtype=torch.bool,device='cuda').repeat(o,i // 4)
  weight=torch.randn(o,i,device='cuda',dtype=torch.float16) * keep
  sparse=to_sparse_semi_structured(weight)
  x=torch.randn(i,4096,device='cuda',dtype=torch.float16)
  runs={'dense':lambda:torch.mm(weight,x),'2:4':lambda:torch.mm(sparse,x)}
  def timed(fn):
   torch.cuda.synchronize()
   t0=time.perf_counter()
   for _ in range(50):
    fn()
   torch.cuda.synchronize()
   return (time.perf_counter() - t0) / 50
  times:dict[str,list[float]]={k:[] for k in runs}
  for fn in runs.values():
   fn()
  for _ in range(rounds):
   for k,fn in runs.items():
    times[k].append(timed(fn))
  res[label]={'speedup':ratio_stats(times['dense'],times['2:4']),'dense_us':statistics.median(times['dense']) * 1000000.0,'sparse_us':statistics.median(times['2:4']) * 1000000.0}
 out['gpu']={'device':torch.cuda.get_device_name(),'results':res}
 return out
print(json.dumps(nm_check(10)))
