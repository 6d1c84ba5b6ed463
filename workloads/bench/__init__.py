"""Benchmarks: each prints its figures with its command line and the machine's facts. Speed
lives here, never in timed tests.

One module per ``python -m workloads.bench NAME``: ``service`` (the service's own figures),
``generator`` (the load generator's ceiling), ``profiling`` (what profiling costs),
``verdicts`` (A/A calibration, power, planted bottlenecks; ``interleaved`` holds its
``--interleaved`` table), ``ingest`` (index builds), ``soak`` (a long run and what it
kept) and ``capacity`` (the capacity search against a capacity known by construction);
``session`` opens each of them the same way.
"""
