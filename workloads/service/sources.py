"""Source trees: finding a project's files, reading them as text, cutting them into chunks.

Pure file and string work, no MLX: chunks are what the embedder embeds and the index
returns, so they carry their file and line range.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datamodel.errors import ProjectError, SourceFileError

SOURCE_SUFFIXES = frozenset(
    {
        ".py",
        ".pyi",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".rs",
        ".go",
        ".js",
        ".ts",
        ".tsx",
        ".java",
        ".kt",
        ".swift",
        ".m",
        ".mm",
        ".rb",
        ".sh",
        ".md",
        ".rst",
        ".toml",
    }
)
SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", "build"})
MAX_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """A piece of one source file, the unit that gets embedded and retrieved."""

    path: str
    """File path relative to the project root."""
    start_line: int
    """First line, 1-based."""
    end_line: int
    """Last line, inclusive."""
    text: str


def iter_source_files(root: Path, suffixes: frozenset[str] = SOURCE_SUFFIXES) -> Iterator[Path]:
    """Yield the source files under ``root`` in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise ProjectError(f"source tree {root} does not exist or is not a folder")
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        base = Path(folder)
        found.extend(base / f for f in files if Path(f).suffix in suffixes)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    for path in found:
        if not path.is_symlink():
            yield path


def read_source(path: Path) -> str:
    """Read ``path`` as UTF-8 text; a missing, binary, huge or non-UTF-8 file raises."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFileError(f"source file {path} cannot be read: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SourceFileError(f"source file {path} is {len(data)} bytes, over {MAX_FILE_BYTES}")
    if b"\x00" in data:
        raise SourceFileError(f"source file {path} is binary (holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFileError(
            f"source file {path} is not UTF-8 (bad byte at offset {exc.start})"
        ) from exc


def chunk_text(path: str, text: str, *, max_lines: int = 40, max_chars: int = 600) -> list[Chunk]:
    """Cut ``text`` into consecutive chunks of at most ``max_lines`` and about ``max_chars``.

    A chunk ends at a line boundary once either limit is reached (a single longer line is
    kept whole and cut at ``max_chars``). Blank-only chunks are dropped. ``max_chars`` is
    sized so that a chunk mostly fits the embedder's 128-token window.
    """
    if max_lines < 1 or max_chars < 1:
        raise ValueError("max_lines and max_chars must be >= 1")
    chunks: list[Chunk] = []
    lines = text.splitlines()
    start = 0
    while start < len(lines):
        end = start
        size = 0
        while end < len(lines) and end - start < max_lines:
            size += len(lines[end]) + 1
            end += 1
            if size >= max_chars:
                break
        body = "\n".join(lines[start:end])[:max_chars]
        if body.strip():
            chunks.append(Chunk(path=path, start_line=start + 1, end_line=end, text=body))
        start = end
    return chunks


def count_lines(root: Path) -> int:
    """Lines in the readable source files under ``root`` (unreadable ones count 0)."""
    total = 0
    for path in iter_source_files(root):
        try:
            total += read_source(path).count("\n") + 1
        except SourceFileError:
            continue
    return total
