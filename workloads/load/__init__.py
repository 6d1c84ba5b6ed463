"""The load: what users of many projects send, when, and who sends it.

``spec`` (profiles: stages, mix, popularity, the checks of a profile file), ``shapes``
(each worker's plan of a stage: arrivals in open loop, users in closed loop), ``routing``
(which replica serves a project), ``generator`` (the Ray actor that issues the plan and
records every operation), ``fleet`` (the run's generator workers, drained and replaced),
``progress`` (what the terminal shows while it runs).
"""
