#!/usr/bin/env bash
# Issue 3 measurements: minilm-l6 on real GLUE and WikiText-2, CPU, one thread. Rerunning reuses finished runs.
#   TICKETS_DATA=../shared/data bash docs/results/text-minilm/run.sh
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/text}
GLUE="--train-size 2000 --epochs 2 --limit 872 --lr 5e-5 --warmup 0.1 --out $OUT --quiet"
log() { echo "### $*"; }

log "dense SST-2";  tickets transfer --model minilm-l6 --task glue/sst2 $GLUE
log "dense MRPC";   tickets transfer --model minilm-l6 --task glue/mrpc $GLUE
log "IMP on SST-2, BERT schedule (10% of the original per level) to 50%"
tickets find --model minilm-l6 --task glue/sst2 --method imp --schedule linear --rate 0.1 --levels 5 $GLUE
log "IMP on the MLM task (WikiText-2) to 50%"
tickets find --model minilm-l6 --task mlm/wikitext-2 --method imp --schedule linear --rate 0.1 --levels 5 \
    --train-size 640 --epochs 1 --limit 200 --lr 1e-4 --warmup 0.1 --out $OUT --quiet
MLM_RUN=$(dirname "$(grep -l "task: mlm/wikitext-2" $OUT/find-*/config.yaml | head -1)")
MLM_TICKET=$MLM_RUN/level-05/ticket.safetensors
log "MLM ticket (50%) transferred to SST-2"
tickets inspect "$MLM_TICKET" | tail -2
tickets transfer --ticket "$MLM_TICKET" --model minilm-l6 --task glue/sst2 $GLUE
log "random pruning at 50% on SST-2 (baseline for the transfer)"
tickets find --model minilm-l6 --task glue/sst2 --method random --sparsities 0.5 $GLUE
