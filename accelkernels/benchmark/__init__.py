"""`accelkernels bench`: kernel microbenchmarks against cuBLAS/cuDNN, reports, plots, auto-tuning.

suites.py (the shape tables in bench/suites/), problems.py (FLOPs, bytes, inputs, what each mode runs),
timing.py, ceilings.py, runner.py (correctness, then timing, into rows), report.py (JSON, CSV,
markdown, plots), tuning.py (the per-card table that backend="auto" consults).
"""
