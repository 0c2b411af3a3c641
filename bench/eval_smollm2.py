"""Dense SmolLM2-135M: perplexity on wiki/c4 eval, prefill/decode speed, first (GGUF) and cached load times.

Run: .venv/bin/python bench/eval_smollm2.py
Load times are measured in fresh processes: the first with an empty cache (GGUF conversion), the
second reusing it, both including `import rankwise` and the model load (not the interpreter start).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

LOAD_SNIPPET = (
    "import time; t0=time.perf_counter(); import rankwise as rw, torch; "
    "from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM; t1=time.perf_counter(); "
    "m, tok = rw.load_model('smollm2-135m'); print(f'{t1-t0:.3f} {time.perf_counter()-t1:.3f}')"
)


def timed_load(cache: str) -> tuple[float, float]:
    """(seconds importing torch + transformers' model code, seconds in load_model) in a fresh process."""
    env = dict(os.environ, RANKWISE_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], env=env, capture_output=True, text=True, check=True)
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def main() -> None:
    import rankwise as rw

    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(cache)
        cached = timed_load(cache)
    model, tok = rw.load_model("smollm2-135m")
    rows = []
    for source in ("wiki", "c4"):
        wins = rw.data.windows(source, split="eval", seq_len=256, tokens=16384, tokenizer=tok)
        ppl = rw.eval.perplexity(model, wins, desc=source)
        rows.append((source, ppl.perplexity, ppl.tokens))
    speed = rw.eval.throughput(model, wins[0])
    print("\nSmolLM2-135M (dense, fp32, CPU)")
    for source, ppl, n in rows:
        print(f"  perplexity {source:<5} {ppl:8.2f}   ({n} tokens, 256-token windows)")
    print(f"  prefill          {speed.prefill_tokens_per_s:8.1f} tokens/s (batch 4 x 256)")
    print(f"  decode           {speed.decode_tokens_per_s:8.1f} tokens/s (batch 1, KV cache)")
    print(f"  load_model, first (GGUF conversion) {first[1]:6.2f} s")
    print(f"  load_model, cached                  {cached[1]:6.2f} s   first/cached {first[1] / cached[1]:.1f}x")
    print(f"  (importing torch + transformers' Llama code in a fresh process: {cached[0]:.2f} s, once per process, "
          "not included above)")


if __name__ == "__main__":
    main()
