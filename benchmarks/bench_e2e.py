"""End-to-end benchmark: the C++ backend against its peers on this CPU (torch eager, ONNX
Runtime, OpenVINO with the f32 and bf16 hints; torch.compile with --compile; with int8, OpenVINO
on NNCF's and ONNX Runtime's static quantization, calibrated on vit-bench's batch-32 inputs) on
the same weights, in the same process, in interleaved rounds, at batch 1 and 32.

    flock /tmp/polyvit-cpu.lock .venv/bin/python benchmarks/bench_e2e.py
        [--config vit_small_patch32_224] [--batch 1 32] [--threads 2] [--rounds 15]
        [--precision fp32 bf16 int8] [--compile] [--json out.json]

The peers are polyvit.bench.peers (the idiomatic torch ViT, exported once to ONNX for ONNX
Runtime and OpenVINO); a missing one is left out with its reason. Printed per batch size: the
median ms per image and its IQR over the rounds, parity against the float64 reference, and the
speed-up of each cpp precision over every other runner (median of per-round ratios: a round's
runners ran within seconds of each other, so drifts of a shared machine cancel).
"""

from __future__ import annotations

import sys

from polyvit.bench.compare import compare, exit_code, parser
from polyvit.bench.peers import peer_runners
from polyvit.bench.sweep import inputs, polyvit_runners
from polyvit.config import get_config
from polyvit.weights import random_weights


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16", "int8"])
    p.add_argument("--compile", action="store_true", help="add torch.compile (slow to compile)")
    args = p.parse_args(argv)

    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    runners = polyvit_runners(["cpp"], args.precision, cfg, weights, args.threads)
    peers, notes = peer_runners(args.precision, cfg, weights, args.threads,
                                include_costly=args.compile, calibration=inputs(cfg, 32))
    return exit_code(compare(runners + peers, cfg, weights, args, ours="cpp", notes=notes))


if __name__ == "__main__":
    sys.exit(main())
