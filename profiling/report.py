"""``python -m profiling.report RUN``: (re)write ``report.html`` of a run folder.

The report itself is built in :mod:`profiling.render.html`; this is the command's name.
"""

from __future__ import annotations

from profiling.render.html import main

if __name__ == "__main__":
    raise SystemExit(main())
