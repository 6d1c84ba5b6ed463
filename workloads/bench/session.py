"""What every benchmark opens with: its command line, the machine, a results folder, and
one local Ray session of its own (stopped, and its temp folder removed, at the end)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workloads.runs.results import machine_info


@contextlib.contextmanager
def bench_session(results_dir: str | None, name: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Print the command and machine, start a local Ray; yield the results folder (a new
    temp folder ``loadlens-bench-NAME-*`` unless given) and the machine's facts."""
    import ray

    machine = machine_info()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.orig_argv[1:]])}")
    print(f"machine: {json.dumps(machine)}")
    results = Path(results_dir or tempfile.mkdtemp(prefix=f"loadlens-bench-{name}-"))
    print(f"results: {results}", flush=True)
    temp = Path(tempfile.mkdtemp(prefix="ll-ray-", dir="/tmp"))
    ray.init(address="local", include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    try:
        yield results, machine
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
