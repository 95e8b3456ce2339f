"""Quality benchmarks of the engine (``python -m bench.quality``); see bench/README.md."""
