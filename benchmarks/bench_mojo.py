"""The Mojo backend against its peers (the C++ backend `cpp`, torch eager), in one process, on
the same weights and images, in interleaved rounds: each round times every runner in turn, so
drift of the machine hits them alike. Prints per-runner medians and the speed-ups of mojo (the
median of the per-round ratios).

    python benchmarks/bench_mojo.py                       # ViT-S/32, batch 1 and 32
    python benchmarks/bench_mojo.py --batch 32 --rounds 9 --peers cpp,torch --json out.json
"""

from __future__ import annotations

import sys

from polyvit import backends
from polyvit.bench.compare import compare, exit_code, parser
from polyvit.bench.peers import peer_runners
from polyvit.bench.sweep import polyvit_runners
from polyvit.config import get_config
from polyvit.weights import random_weights


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--peers", default="cpp,torch",
                   help="comma-separated polyvit backends, and torch for torch eager (the "
                        "idiomatic torch ViT); unavailable ones are reported and skipped")
    args = p.parse_args(argv)

    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    chosen = [name for name in args.peers.split(",") if name]
    available = backends.available_backends()
    names, notes = ["mojo"], []
    for name in (n for n in chosen if n != "torch"):
        ok, reason = available.get(name, (False, "not a registered backend"))
        if ok:
            names.append(name)
        else:
            notes.append(f"{name}: left out ({reason})")
    runners = polyvit_runners(names, ["fp32"], cfg, weights, args.threads)
    if "torch" in chosen:
        peers, missing = peer_runners(["fp32"], cfg, weights, args.threads, names=["torch eager"])
        runners, notes = runners + peers, notes + missing
    return exit_code(compare(runners, cfg, weights, args, ours="mojo", notes=notes))


if __name__ == "__main__":
    sys.exit(main())
