"""``python -m workloads.bench NAME``: one subcommand per benchmark module of this package."""

from __future__ import annotations

import argparse

from workloads.bench import (
    capacity,
    generator,
    ingest,
    interleaved,
    profiling,
    results,
    service,
    soak,
    verdicts,
)

MODULES = (service, generator, profiling, verdicts, ingest, soak, capacity, results)
"""Each adds its subcommand (and its handler) to the parser."""
_ = interleaved  # part of ``verdicts --interleaved``


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it."""
    p = argparse.ArgumentParser(prog="python -m workloads.bench")
    sub = p.add_subparsers(dest="what", required=True)
    for module in MODULES:
        module.add_parser(sub)
    args = p.parse_args(argv)
    args.handler(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
