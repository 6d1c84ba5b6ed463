"""Source reading and chunking (pure file and string work)."""

from __future__ import annotations

import itertools

import pytest

from datamodel.errors import ProjectError, SourceFileError
from workloads.service.sources import chunk_text, count_lines, iter_source_files, read_source


def test_chunks_cover_every_nonblank_line_in_order():
    text = "\n".join(f"line {i} " + "x" * (i % 50) for i in range(200))
    chunks = chunk_text("f.py", text, max_lines=30, max_chars=400)
    assert all(c.end_line - c.start_line + 1 <= 30 for c in chunks)
    assert all(len(c.text) <= 400 for c in chunks)
    assert chunks[0].start_line == 1 and chunks[-1].end_line == 200
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start_line == prev.end_line + 1


def test_blank_chunks_are_dropped_and_long_lines_cut():
    chunks = chunk_text("f.py", "\n\n\n" + "y" * 5000, max_lines=2, max_chars=100)
    assert len(chunks) == 1 and chunks[0].start_line == 3 and len(chunks[0].text) == 100


def test_read_source_errors_name_the_file(tmp_path):
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"abc\x00def")
    latin = tmp_path / "latin.py"
    latin.write_bytes("caf\u00e9 = 1".encode("latin-1"))
    with pytest.raises(SourceFileError, match=r"blob\.py is binary"):
        read_source(binary)
    with pytest.raises(SourceFileError, match=r"latin\.py is not UTF-8"):
        read_source(latin)
    with pytest.raises(SourceFileError, match=r"gone\.py cannot be read"):
        read_source(tmp_path / "gone.py")


def test_iter_source_files_is_sorted_and_skips_noise(tmp_path):
    for rel in ["b.py", "a/c.py", "a/__pycache__/c.cpython-311.pyc", ".git/x.py", "img.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_source_files(tmp_path)]
    assert found == ["a/c.py", "b.py"]
    assert count_lines(tmp_path) == 4  # two files of "x = 1\n" count their trailing line
    with pytest.raises(ProjectError, match="does not exist"):
        list(iter_source_files(tmp_path / "missing"))
