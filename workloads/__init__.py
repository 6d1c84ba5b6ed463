"""The load tester: its command lines and one room per job.

Command lines: ``run`` (``python -m workloads.run``: one run or an A/B), ``compare``
(``python -m workloads.compare``: runs against runs or a baseline) and ``blas``
(``python -m workloads.blas``: the BLAS choice for a shell). Rooms, each importing only
those before it: ``service`` (the builtin service), ``stack`` (what is under load),
``load`` (what users send and the workers that send it), ``runs`` (one run, A/B in
rounds or interleaved) and ``bench`` (``python -m workloads.bench NAME``). Built-in
``profiles/`` and ``configs/`` are TOML files beside them.
"""
