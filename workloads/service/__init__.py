"""The builtin service one replica hosts: base model, per-project LoRA adapters, embedder,
embedding store, sources, vector index, projects and the :class:`~.service.Service` that
serves ``analyze``, ``search``, ``embed``, ``switch`` and ``ingest`` (a ``python:`` stack
may subclass it). One MLX owner per process: only a replica builds it.
"""
