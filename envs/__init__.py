"""Command-line entry points of the model's tools, run from a clone.

The code lives in `damdjax.envs`; ``python -m envs.convert`` runs
`damdjax.envs.convert.main`. Nothing here is installed: an installed
damdjax claims only the name ``damdjax`` on the import path.
"""
