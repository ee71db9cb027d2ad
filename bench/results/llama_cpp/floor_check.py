"""Side-by-side check of the loop's floor: plain Llama.generate, sdl.generate with a drafter that drafts
nothing, and sdl.generate with SamDrafter(text so far), interleaved per repeat (greedy, 2 threads).

Usage: PYTHONPATH=. R=5 python bench/results/llama_cpp/floor_check.py [max_new_tokens]
       PROFILE=none|sam-text|plain ... (cProfile of three calls instead)
Prints each method's median seconds and the median, min and max of its per-repeat speed over plain.
"""
import sys, time, statistics, os
import numpy as np
import llama_cpp
import sam_decoding.llama_cpp as sdl
from sam_decoding.drafters.base import Draft, Drafter
from sam_decoding import SamDrafter
from sam_decoding.models import gguf_path, load_tokenizer
from sam_decoding.prompts import chat_prompt_ids

class Nothing(Drafter):
    def begin(self, prompt_ids): pass
    def propose(self, max_tokens): return Draft.empty("none")
    def accept(self, tokens, verified): pass

llm = llama_cpp.Llama(model_path=str(gguf_path()), n_ctx=4096, n_threads=2, n_threads_batch=2, verbose=False)
vocab = llama_cpp.llama_model_get_vocab(llm.model)
tok = load_tokenizer(None)
prompt = chat_prompt_ids(tok, "Write a short story about a robot who learns to paint.")[0].tolist()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 128
def plain():
    out = []
    for t in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(t)
        if llama_cpp.llama_vocab_is_eog(vocab, t) or len(out) >= N: break
    return out
sdl.generate(llm, [1,2,3], max_new_tokens=1)
modes = {"plain": plain,
         "none": lambda: sdl.generate(llm, prompt, drafter=Nothing(), max_new_tokens=N).new_tokens,
         "sam-text": lambda: sdl.generate(llm, prompt, drafter=SamDrafter(use_tree=False), max_new_tokens=N).new_tokens}
if os.environ.get("PROFILE"):
    import cProfile, pstats
    cProfile.run('for _ in range(3): modes[os.environ["PROFILE"]]()', '/tmp/s9/prof')
    pstats.Stats('/tmp/s9/prof').sort_stats('tottime').print_stats(25)
    sys.exit()
R = int(os.environ.get("R", 7))
times = {k: [] for k in modes}
ref = plain()
for r in range(R):
    for k, f in modes.items():
        t = time.perf_counter(); out = f(); times[k].append(time.perf_counter() - t)
        if r == 0: print(k, len(out), "same" if list(out) == list(ref) else "DIFFERS")
print("load", open("/proc/loadavg").read().strip())
base = statistics.median(times["plain"])
for k, v in times.items():
    ratios = [times["plain"][i] / v[i] for i in range(R)]
    print(f"{k:10s} median {statistics.median(v)*1000:.1f} ms  speed vs plain median {statistics.median(ratios):.3f} (min {min(ratios):.3f} max {max(ratios):.3f})")
