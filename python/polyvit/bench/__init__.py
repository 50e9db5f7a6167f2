"""vit-bench's machinery: runners for polyvit backends and peers, the interleaved sweep, and
the reports. The console script is polyvit.cli.bench."""
