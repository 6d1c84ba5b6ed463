"""Finding or starting Ray: an embedded local cluster by default, or ``--address`` to join
one (token authentication on, dashboard on 127.0.0.1)."""
