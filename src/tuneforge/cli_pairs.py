"""``tuneforge pairs``: preference pairs from chat data by the self-play rule (the corpus's answer chosen, the SFT
run's own answer rejected). Thin: parse, call, print."""

from __future__ import annotations

import json
from typing import Any


def add_pairs_parser(sub: Any) -> None:
    pairs = sub.add_parser("pairs", help="preference pairs from chat data: the data's answer chosen, an SFT run's own "
                                         "greedy answer rejected (SPIN's self-play rule), as JSONL for dpo/reward-model")
    pairs.add_argument("--from", dest="sft_run", required=True, metavar="RUN_DIR", help="the SFT run that answers")
    pairs.add_argument("--data", required=True, help="chat data: a file (messages, sharegpt, alpaca, "
                       "prompt/completion) or offline:NAME, e.g. offline:chatterbot")
    pairs.add_argument("--output", required=True, help="the JSONL file to write")
    pairs.add_argument("--max-prompts", type=int, help="answer at most this many distinct prompts (a seeded sample)")
    pairs.add_argument("--max-new-tokens", type=int, default=32, help="most tokens of the run's answer (default 32)")
    pairs.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")


def pairs(args: Any) -> int:
    import sys

    from tuneforge.pipelines.self_play import self_play_pairs

    facts = self_play_pairs(args.sft_run, args.data, args.output, args.max_prompts, args.seed, args.max_new_tokens,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(facts, indent=2))
    return 0


PAIRS_COMMANDS = {"pairs": pairs}
