"""agents: SB3 agents that learn task-weighting policies, and the ``igb`` command line."""
