"""Benchmarks. Each prints figures and a ratio against a peer or a limit
measured in the same run: absolute times are not comparable across runs."""
