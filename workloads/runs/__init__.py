"""The orchestration: one run, and runs that compare.

``live`` (a run's spec, its interrupts, what it holds while it runs and one stage of load on
it), ``builtin`` and ``http`` (the two ways a stack is opened for load: loadlens's own
replicas, or a server over HTTP), ``runner`` (one run start to end: folder, stack, stages,
summary, analysis, report), ``ab`` (an A/B in whole-run rounds), ``interleave`` (an A/B
in interleaved blocks in one session), ``results`` (run ids and machine facts).
"""
