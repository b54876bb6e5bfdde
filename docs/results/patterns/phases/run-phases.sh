#!/bin/bash
# the patterns study in priority order: unstructured, channel, 2:4, then the whole file (same run directories)
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
for p in p1 p2 p3; do
  echo "=== phase $p $(date -u)"
  tickets run runs/patterns/phases/$p.yaml --threads 1 --out runs/patterns --no-report
done
echo "=== whole study $(date -u)"
tickets run examples/patterns.yaml --threads 1 --out runs/patterns
echo "=== finished $(date -u)"
