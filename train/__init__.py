"""Command-line entry points of the trainers, run from a clone.

The code lives in `damdjax.train`; ``python -m train.dqn`` runs
`damdjax.train.dqn.main` (likewise ``mdqn``, ``damd``, ``sweep``). Nothing
here is installed: an installed damdjax claims only the name ``damdjax``.
"""
