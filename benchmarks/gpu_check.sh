#!/usr/bin/env bash
# GPU check (issue 14 §5), under 5 minutes on one GPU: a 2-level ResNet-56 IMP (dense level + 50%) on CIFAR-10 and
# a MiniLM-L6 SST-2 transfer of a 50% ticket (dense baseline when none is given), on CUDA in fp32 and in bf16;
# prints examples/second of the training epochs, test scores and the tickets' checksums.
#   TICKETS_DATA=... TICKETS_MODELS=... bash benchmarks/gpu_check.sh [OUT] [cnn|text|all]
# Environment: TICKETS (the command, default `tickets`; `python -m tickets` works too), MINILM_TICKET (a minilm-l6
# ticket file to transfer, e.g. a level-05 ticket of the text study), CIFAR_TRAIN (training examples, default 9000).
# Results of a run on an H200 are in docs/performance.md ("GPU check").
set -euo pipefail
OUT=${1:-runs/gpu-check}
PART=${2:-all}
TICKETS=${TICKETS:-tickets}
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for precision in fp32 bf16; do
  if [[ $PART == cnn || $PART == all ]]; then
    echo "### resnet56-cifar10 IMP, 2 levels, $precision"
    start=$(date +%s.%N)
    $TICKETS find --model resnet56-cifar10 --task cifar10 --sparsities 0.5 --epochs 2 \
        --train-size "${CIFAR_TRAIN:-9000}" --limit 2000 --batch-size 128 --precision "$precision" --device cuda \
        --out "$OUT" --quiet
    echo "wall $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
  fi
  if [[ $PART == text || $PART == all ]]; then
    echo "### minilm-l6 SST-2 transfer ${MINILM_TICKET:+of $MINILM_TICKET}, $precision"
    start=$(date +%s.%N)
    $TICKETS transfer --model minilm-l6 --task glue/sst2 ${MINILM_TICKET:+--ticket "$MINILM_TICKET"} --epochs 1 \
        --train-size 8000 --limit 872 --precision "$precision" --device cuda --out "$OUT" --quiet
    echo "wall $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
  fi
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from tickets.ticket import load_ticket
for run in sorted(Path(sys.argv[1]).glob("*-*")):
    cfg = (run / "config.yaml").read_text()
    precision = "bf16" if "precision: bf16" in cfg else "fp32"
    for metrics in sorted(run.glob("level-*/metrics.json")):
        m = json.loads(metrics.read_text())
        eps = [round(h["examples_per_second"]) for h in m.get("history", []) if "examples_per_second" in h]
        ticket = metrics.parent / "ticket.safetensors"
        checksum = load_ticket(ticket).meta["checksum"][7:19] if ticket.exists() else ""
        test = m["test"][m["primary_metric"]] if "test" in m else float("nan")
        print(f"{run.name} {metrics.parent.name} {precision}: train ex/s per epoch {eps}, test "
              f"{m['primary_metric']} {test:.4f}, ticket {checksum}")
PY
