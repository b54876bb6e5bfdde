#!/usr/bin/env bash
# GPU check (issue 14 §5), under 5 minutes on one GPU: a 2-level ResNet-56 IMP and a MiniLM SST-2 transfer on
# CUDA, in bf16 and in fp32; prints examples/second of the training epochs and the tickets' checksums.
#   TICKETS_DATA=... TICKETS_MODELS=... bash benchmarks/gpu_check.sh [OUT]
set -euo pipefail
OUT=${1:-runs/gpu-check}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for precision in fp32 bf16; do
  echo "### resnet56-cifar10 IMP, 2 levels, $precision"
  tickets find --model resnet56-cifar10 --task cifar10 --sparsities 0.5 --epochs 2 --train-size 10000 \
      --limit 2000 --batch-size 128 --precision "$precision" --device cuda --out "$OUT" --quiet
  echo "### minilm-l6 SST-2 transfer of nothing (dense), $precision"
  tickets transfer --model minilm-l6 --task glue/sst2 --epochs 1 --train-size 8000 --limit 872 \
      --precision "$precision" --device cuda --out "$OUT" --quiet
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).glob("*-*")):
    cfg = (run / "config.yaml").read_text()
    precision = "bf16" if "precision: bf16" in cfg else "fp32"
    for metrics in sorted(run.glob("level-*/metrics.json")):
        m = json.loads(metrics.read_text())
        eps = [round(h["examples_per_second"]) for h in m["history"]]
        ticket = metrics.parent / "ticket.safetensors"
        checksum = ""
        if ticket.exists():
            from tickets.ticket import load_ticket
            checksum = load_ticket(ticket).meta["checksum"][7:19]
        print(f"{run.name} {metrics.parent.name} {precision}: ex/s per epoch {eps}, test "
              f"{m['test'][m['primary_metric']]:.4f}, ticket {checksum}")
PY
