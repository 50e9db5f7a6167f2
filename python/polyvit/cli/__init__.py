"""Console scripts: vit-run, vit-convert."""
