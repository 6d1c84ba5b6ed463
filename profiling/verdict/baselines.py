"""Named baselines: a copy of a run folder kept under a name, to compare later runs with.

``results/baselines/<NAME>/`` holds the files a comparison reads (``run.json``,
``records.jsonl``, the timeline, snapshots, analysis, ingest and MLX probe reports and
``profiles/*.collapsed``), not the large extras (raw py-spy output, SVGs, HTML), plus
``baseline.json`` saying where and when it was saved. Saving a name again replaces it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from datamodel.errors import ConfigError
from datamodel.names import SAFE_NAME, check_name
from datamodel.runfolder import (
    INGEST,
    MLX_PROBE,
    PROFILES,
    RECORDS,
    RUN_JSON,
    SNAPSHOTS,
    TIMELINE,
    RunData,
    utc_now,
    write_json,
)

DEFAULT_ROOT = Path("results") / "baselines"
"""Where named baselines live unless told otherwise."""
FILES = (RUN_JSON, RECORDS, TIMELINE, SNAPSHOTS, "analysis.json", INGEST, MLX_PROBE)
"""Top-level run-folder files a baseline keeps (those that exist)."""
INFO = "baseline.json"
"""The baseline's own description: name, source folder, run id, time saved."""


def _check_name(name: str) -> str:
    return check_name(name, "baseline")


def list_baselines(root: Path = DEFAULT_ROOT) -> list[str]:
    """Names of the baselines saved under ``root``, sorted."""
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if SAFE_NAME.fullmatch(p.name) and (p / RUN_JSON).is_file()
    )


def save_baseline(run_dir: str | Path, name: str, root: Path = DEFAULT_ROOT) -> Path:
    """Copy the comparable files of the run folder ``run_dir`` to ``root/name``.

    The run is read first, so a missing or partial run folder raises
    :class:`ConfigError` and saves nothing. An existing baseline of that name is
    replaced only once the new copy is complete. Returns the baseline folder.
    """
    _check_name(name)
    run = RunData.load(run_dir)
    source = run.path
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        for file in FILES:
            if (source / file).is_file():
                shutil.copy2(source / file, staging / file)
        profiles = sorted((source / PROFILES).glob("*.collapsed"))
        if profiles:
            (staging / PROFILES).mkdir()
            for path in profiles:
                shutil.copy2(path, staging / PROFILES / path.name)
        info = {"name": name, "source": str(source.resolve()), "run_id": run.run_id}
        write_json(staging / INFO, {**info, "saved_utc": utc_now()})
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_baseline(name: str, root: Path = DEFAULT_ROOT) -> RunData:
    """The run saved as baseline ``name`` under ``root``.

    Raises :class:`ConfigError` listing the known baselines when ``name`` is unknown.
    """
    folder = root / _check_name(name)
    if not (folder / RUN_JSON).is_file():
        known = list_baselines(root)
        listing = f"known: {', '.join(known)}" if known else "none saved yet"
        raise ConfigError(
            f"unknown baseline {name!r} under {root} ({listing}); save one with "
            "python -m workloads.compare --save-baseline NAME RUN"
        )
    return RunData.load(folder)
