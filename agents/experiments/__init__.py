"""The experiment harness: comparison grids, their one cell runner and report, and their users.

``igb compare`` runs a grid from YAML; ``igb quickstart`` and ``igb evaluate`` generate one;
``igb perf`` measures costs side by side.

Layout, one job per module: ``config`` (the YAML schema), ``grid`` (cells and keys), ``cells`` (one
cell in a worker, records on disk), ``backends`` (local processes or Ray), ``runner`` (``compare``),
``rows`` / ``stats`` / ``report`` / ``plots`` (tables and figures from the records), then
``quickstart``, ``evaluate`` (generated experiments) and ``perf`` / ``perf_agent`` / ``timing``.
"""
