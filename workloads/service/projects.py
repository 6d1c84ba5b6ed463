"""Projects (a source tree + an adapter + an index) and switching between them.

Default projects are real source trees present on every machine: packages of the Python
standard library, then installed site-packages, each with at least 5k lines.
"""

from __future__ import annotations

import importlib.util
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from datamodel.errors import ConfigError, ProjectError
from datamodel.names import check_name as check_safe_name
from workloads.service.adapters import AdapterManager
from workloads.service.index import ProjectIndex, ProjectVectorStoreManager
from workloads.service.sources import count_lines

# Ordered so that the first ten present give >= 100k lines with the smallest trees first.
STDLIB_CANDIDATES = (
    "http",
    "importlib",
    "multiprocessing",
    "xml",
    "ctypes",
    "email",
    "asyncio",
    "tkinter",
    "unittest",
    "lib2to3",
    "distutils",
    "idlelib",
    "pydoc_data",
    "encodings",
)
PACKAGE_CANDIDATES = ("pip", "setuptools", "numpy", "psutil", "mlx_lm", "ray")
MIN_DEFAULT_LINES = 5000


@dataclass(frozen=True)
class Project:
    """One project the service can serve."""

    name: str
    """Unique name; also the index folder's name."""
    root: Path
    """The source tree."""
    adapter: Path | None = None
    """The project's adapter folder; ``None`` means one is generated for it."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe project name, else raise :class:`ConfigError`."""
    return check_safe_name(name, "project")


def parse_project_arg(arg: str) -> Project:
    """Parse ``NAME=PATH[:ADAPTER]`` or ``PATH`` (named after its folder) from a CLI flag."""
    name, sep, rest = arg.partition("=")
    if not sep:
        name, rest = Path(arg).name, arg
    path, _, adapter = rest.partition(":")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--project {name!r}: source tree {root} does not exist")
    adapter_path = Path(adapter).expanduser() if adapter else None
    return Project(name=check_name(name), root=root, adapter=adapter_path)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_projects(count: int, *, min_lines: int = MIN_DEFAULT_LINES) -> list[Project]:
    """The first ``count`` candidate source trees on this machine with >= ``min_lines``."""
    if count < 1:
        raise ConfigError(f"number of projects must be >= 1, got {count}")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    candidates: list[tuple[str, Path | None]] = [
        (f"std-{n}", stdlib / n) for n in STDLIB_CANDIDATES
    ]
    candidates += [(f"pkg-{n}", _package_dir(n)) for n in PACKAGE_CANDIDATES]
    found: list[Project] = []
    for name, root in candidates:
        if root is None or not root.is_dir():
            continue
        if count_lines(root) >= min_lines:
            found.append(Project(name=name, root=root))
            if len(found) == count:
                return found
    raise ConfigError(
        f"only {len(found)} default projects with >= {min_lines} lines exist on this machine, "
        f"{count} asked for; add your own with --project NAME=PATH"
    )


@dataclass(frozen=True)
class SwitchTiming:
    """What a switch cost, in seconds, and whether each part was already resident."""

    seconds: float
    adapter_seconds: float
    index_seconds: float
    adapter_hit: bool
    index_hit: bool
    changed: bool
    """False when the project was already the active one."""


class ProjectContextManager:
    """Knows the projects and makes one of them current: its adapter active, index loaded."""

    def __init__(self, adapters: AdapterManager, indexes: ProjectVectorStoreManager) -> None:
        self.adapters = adapters
        self.indexes = indexes
        self.projects: dict[str, Project] = {}
        self.current: str | None = None
        self.switches = 0

    def add(self, project: Project, adapter_path: Path) -> None:
        """Register ``project`` with the adapter folder it uses."""
        if project.name in self.projects:
            raise ConfigError(f"project {project.name!r} is added twice")
        self.projects[project.name] = project
        self.adapters.register(project.name, adapter_path)

    def get(self, name: str) -> Project:
        """The project called ``name``; an unknown name lists the known ones."""
        try:
            return self.projects[name]
        except KeyError:
            known = ", ".join(sorted(self.projects)) or "none"
            raise ProjectError(f"unknown project {name!r} (known: {known})") from None

    def switch(self, name: str) -> tuple[ProjectIndex, SwitchTiming]:
        """Make ``name`` current; returns its index and what the switch cost.

        The adapter is activated before the index is loaded; if the index fails, the
        previous project stays current (its adapter is put back).
        """
        self.get(name)
        start = time.perf_counter()
        previous = self.current
        hits_before = self.adapters.stats.hits
        self.adapters.activate(name)
        adapter_done = time.perf_counter()
        index_hits_before = self.indexes.stats.hits
        try:
            index = self.indexes.load(name)
        except Exception:
            if previous is not None and previous != name:
                self.adapters.activate(previous)
            raise
        end = time.perf_counter()
        changed = previous != name
        if changed:
            self.switches += 1
        self.current = name
        return index, SwitchTiming(
            seconds=end - start,
            adapter_seconds=adapter_done - start,
            index_seconds=end - adapter_done,
            adapter_hit=self.adapters.stats.hits > hits_before,
            index_hit=self.indexes.stats.hits > index_hits_before,
            changed=changed,
        )
