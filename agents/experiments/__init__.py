"""The experiment harness: comparison grids, their one cell runner and report, and their users.

``igb compare`` runs a grid from YAML; ``igb quickstart`` and ``igb evaluate`` generate one;
``igb perf`` measures costs side by side.

Layout, one job per module: ``config`` (the YAML schema), ``grid`` (cells and keys), ``cells`` (one
cell in a worker, records on disk), ``backends`` (local processes or Ray), ``runner`` (``compare``),
``rows`` / ``stats`` / ``report`` / ``plots`` (tables and figures from the records; ``rl_stats``
the estimators of Agarwal et al. 2021 and ``rliable_summary`` the summary over runs and agent
seeds), then ``quickstart``, ``evaluate`` (generated experiments), ``seed_jobs`` (agent seeds as
separate jobs) and ``perf`` / ``perf_agent`` / ``timing``.
"""
