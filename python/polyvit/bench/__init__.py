"""What every benchmark shares: the torch peer (torch_peer.py), the peers' runners (peers.py),
the interleaved-rounds engine (rounds.py), runners and their measurement with parity
(sweep.py), the reports (report.py) and the CPU scripts' common run (compare.py). vit-bench's
console script is polyvit.cli.bench; the scripts are in benchmarks/."""
