"""``python -m workloads.blas --shell-env | --survey``: the BLAS choice's command line (the
choice itself lives in :mod:`workloads.stack.blas`)."""

from workloads.stack.blas import main

if __name__ == "__main__":
    raise SystemExit(main())
