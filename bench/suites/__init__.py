"""Benchmark shape suites (CSV tables), installed as accelkernels.bench_suites."""
