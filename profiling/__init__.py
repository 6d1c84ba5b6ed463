"""The profiler and the verdict: ``capture`` (while a run goes), ``verdict`` (on a finished
run folder) and ``render`` (terminal, JSON, the HTML report); ``report`` rebuilds a
folder's analysis and report (``python -m profiling.report RUN``). Imports ``datamodel``
only, never ``workloads``.
"""
