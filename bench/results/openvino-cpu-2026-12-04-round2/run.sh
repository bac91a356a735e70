#!/bin/bash
# issue 24 re-measure on branch speed; the whole sequence under the shared lock (one hold).
cd /work/wt-speed
export PYTHONPATH=/work/wt-speed HF_HUB_OFFLINE=1
O=/work/bench-speed
PY=/work/main/.venv/bin/python
B="nice -n 10 $PY bench/bench_embed.py --threads 2 --rounds 2"
stage() { name=$1; shift
  if [ "$(date -u +%H%M)" -ge "$STOP" ]; then echo "== $name skipped (past $STOP)" >> $O/run.log; return; fi
  echo "== $name start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $O/run.log
  "$@" > $O/$name.txt 2>&1
  echo "== $name end $(date -u +%T) rc=$? load $(cut -d' ' -f1-3 /proc/loadavg)" >> $O/run.log; }
echo "lock taken $(date -u +%T)" >> $O/run.log
STOP=2132
stage tests $PY -m pytest -q tests/model/backends/test_openvino_backend.py -x
stage ip-mixed $B --in-process --corpus /work/bench-ov/mixed600.jsonl --only D,G,H,I,J --workdir $O/ip-mixed --json $O/ip-mixed.json
stage ip-long $B --in-process --corpus /work/bench-ov/long300.jsonl --only D,G,H,I,J --workdir $O/ip-long --json $O/ip-long.json
stage ip-short $B --in-process --corpus /work/bench-ov/short1000.jsonl --only D,G,H,I,J --workdir $O/ip-short --json $O/ip-short.json
stage wp-short $B --corpus /work/bench-ov/short1000.jsonl --only D,H,I,K --workdir $O/wp-short --json $O/wp-short.json
stage wp-long $B --corpus /work/bench-ov/long300.jsonl --only D,H,I,K --workdir $O/wp-long --json $O/wp-long.json
STOP=2125
stage wp-short3000 $B --corpus /work/bench-ov/short3000.jsonl --only H,K --workdir $O/wp-short3000 --json $O/wp-short3000.json
stage wp-long1000 $B --corpus /work/bench-ov/long1000.jsonl --only H,K --workdir $O/wp-long1000 --json $O/wp-long1000.json
STOP=2135
for b in "openvino bfloat16" "openvino float32" "onnx auto"; do set -- $b
  stage cc-$1-$2 $PY bench/bench_call_cost.py --backend $1 --dtype $2 --reps 10 --json $O/cc-$1-$2.json; done
echo "ALLDONE $(date -u +%T)" >> $O/run.log
