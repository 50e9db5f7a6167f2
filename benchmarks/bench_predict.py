"""End-to-end dataset inference, from a folder of JPEGs on disk to rows in parquet: the peer
(torch eager + DataLoader), vit-predict on the local engine and on Ray Data. The benchmark
lives in polyvit.bench.predict (vit-bench --predict N runs it too); this is its script.

    .venv/bin/python benchmarks/bench_predict.py [--images 2000] [--runs peer cpp-fp32 ...]
        [--update-docs docs/results.md README.md] [--json out.json]
"""

import sys

from polyvit.bench.predict import main

if __name__ == "__main__":
    sys.exit(main())
