"""A results folder that cannot take more: a disk that fills mid-run, a read-only folder.
Real file systems (a small tmpfs mounted for the test, as root can on the CI machine)."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs import finish, only_run, records_written, run_records, start, wait_for


@contextlib.contextmanager
def small_disk(where: Path, size: str, *options: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block's length."""
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs"]
    subprocess.run([*mount, str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill(disk: Path) -> int:
    """Fill ``disk`` to its last byte; how many bytes that took."""
    written = 0
    with (disk / "filler").open("wb", buffering=0) as fh, pytest.raises(OSError) as full:
        while True:
            written += fh.write(bytes(1 << 16))
    assert full.value.errno == errno.ENOSPC
    return written


def run_with_records_on(disk: Path, cache: Path) -> tuple[Path, subprocess.Popen[str], int]:
    """A 40 s smoke run with its results on ``disk``, once it has written 10 records: its
    results folder, its process and how many records it had written then."""
    results = disk / "results"
    proc = start(results, cache, "--profile", "smoke", "--duration", "40", "--no-profile")
    wait_for(records_written(results, 10), proc)
    return results, proc, len(run_records(only_run(results)))


def test_a_disk_that_fills_mid_run_stops_it_with_its_records_and_a_reason(tmp_path, cache_dir):
    with small_disk(tmp_path / "disk", "16m") as disk:
        results, proc, before = run_with_records_on(disk, cache_dir)
        fill(disk)
        elapsed, err = finish(proc, timeout=120)
        assert proc.returncode == 1, err[-3000:]
        assert "No space left on device" in err and "free some space" in err
        assert "Traceback" not in err
        run = only_run(results)
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "failed"
        assert "No space left on device" in info["error"] and str(run) in info["error"]
        assert len(run_records(run)) >= before  # what was written before stays readable
        assert (run / "summary.json").exists()
        assert not (run / ".space-reserve").exists()
        assert elapsed < 60  # it stopped; it did not run out its 40 s stages and more


def test_a_results_folder_made_read_only_mid_run_stops_it_with_a_clear_error(tmp_path, cache_dir):
    with small_disk(tmp_path / "disk", "16m") as disk:
        results, proc, before = run_with_records_on(disk, cache_dir)
        remount = ["mount", "-o", "remount,ro", str(disk)]
        subprocess.run(remount, check=True, capture_output=True)
        elapsed, err = finish(proc, timeout=120)
        assert proc.returncode == 1, err[-3000:]
        assert "Read-only file system" in err and str(results) in err
        assert "Traceback" not in err
        assert len(run_records(only_run(results))) >= before  # nothing written is lost
        assert elapsed < 60
