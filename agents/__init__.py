"""agents: SB3 agents that learn task-weighting policies, and the ``igb`` command line.

``import agents.online`` registers the ``igbv2`` weighting (IGBv2 online) in
``mtl_backends.weightings.LOSS_WEIGHTINGS``; the import is light (SB3 loads when an ``IGBv2`` is
reset), and ``igb train``, ``igb online`` and ``igb compare`` do it before building a weighting.
"""
