"""Bridges from the JAX views to environment libraries outside JAX, one module per
library, each importing its library: `damdjax.bridges.gymnasium` (a `gymnasium.Env` over
the dispatcher's view) and `damdjax.bridges.pettingzoo` (PettingZoo). Import the module
you need; this package imports none of them, so the core install needs neither library.
"""
