"""Command-line entry points of the evaluation tools, run from a clone.

The code lives in `damdjax.eval`; ``python -m eval.compare`` runs
`damdjax.eval.compare.main` (likewise ``bench``, ``bench_train``,
``figures``, ``target_spread``, ``traffic``). Nothing here is installed.
"""
