"""`rankwise eval MODEL`: perplexity on token windows, plus prefill/decode throughput."""

from __future__ import annotations

import argparse
from typing import Any

from rankwise.cli.common import positive_int, seq_len

EXAMPLES = """examples:
  rankwise eval smollm2-135m --data wiki --split eval --tokens 16384 --seq-len 256
  rankwise eval out/smol-20 --data c4 --tokens 8192 --out c4.json
  rankwise eval smollm2-135m --data notes.txt --split all --no-speed"""


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="perplexity and prefill/decode speed of a model",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled name (smollm2-135m), HF folder, .gguf file or hub id")
    p.add_argument("--data", default="wiki",
                   help="wiki, c4, tinystories, code, a .txt/.jsonl file or hf:NAME (default wiki)")
    p.add_argument("--split", default="eval", choices=["calib", "eval", "all"],
                   help="which part of --data: eval (held out, the default), calib or all")
    p.add_argument("--tokens", type=positive_int, default=16384, help="tokens to score (default 16384)")
    p.add_argument("--seq-len", type=seq_len, default=256,
                   help="window length in tokens, at most the model's context (default 256)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--no-speed", action="store_true", help="skip the throughput measurement (default: measure)")
    p.add_argument("--out", help="also write the results as JSON to this file (default: none)")
    p.set_defaults(func=run)


def evaluate(model: Any, args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    from rankwise.data.windows import windows
    from rankwise.eval.perplexity import perplexity
    from rankwise.eval.speed import throughput

    wins = windows(args.data, split=args.split, seq_len=args.seq_len, tokens=args.tokens, tokenizer=tokenizer)
    ppl = perplexity(model, wins, batch_size=args.batch_size, desc=f"perplexity ({args.data})")
    result: dict[str, Any] = {"model": args.model, "data": args.data, "split": args.split, "seq_len": args.seq_len,
                              "perplexity": ppl.perplexity, "nll": ppl.nll, "tokens_scored": ppl.tokens}
    if not args.no_speed:
        speed = throughput(model, wins[0])
        result.update(prefill_tokens_per_s=speed.prefill_tokens_per_s, decode_tokens_per_s=speed.decode_tokens_per_s)
    return result


def run(args: argparse.Namespace) -> int:
    from rankwise.cli.common import write_json
    from rankwise.data.sources import documents
    from rankwise.errors import RankwiseError
    from rankwise.io.atomic import check_output_file
    from rankwise.io.loading import check_seq_len, load_model, model_config

    # Every check that needs no weights first: a bad input fails before the (slower) model load.
    if args.out:
        check_output_file(args.out)
    documents(args.data, args.split)
    check_seq_len(model_config(args.model), args.seq_len)
    if args.tokens < args.seq_len:
        raise RankwiseError(f"--tokens {args.tokens} is less than one window of --seq-len {args.seq_len}; "
                            f"pass --tokens {args.seq_len} or more, or a shorter --seq-len")
    model, tokenizer = load_model(args.model)
    result = evaluate(model, args, tokenizer)
    print(f"perplexity      {result['perplexity']:.3f}  ({args.data} {args.split}, {args.seq_len}-token windows)")
    print(f"tokens scored   {result['tokens_scored']:,}")
    if "prefill_tokens_per_s" in result:
        print(f"prefill         {result['prefill_tokens_per_s']:.1f} tokens/s")
        print(f"decode          {result['decode_tokens_per_s']:.1f} tokens/s")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0
