"""Benchmarks for xconsumer: handover latency, assignment cost, steady-state cost, and a
comparison with kazoo's SetPartitioner. Run with `bin/bench` (see docs/BENCHMARKS.md)."""
