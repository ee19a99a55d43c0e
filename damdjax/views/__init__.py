"""Views of the edge environment for code written against other environment APIs.

`DispatcherView` (`damdjax.views.dispatcher`): the single-agent dispatcher's view, one
step per dispatch decision, with the gymnax `Environment` API (duck-typed: gymnax is an
optional extra, imported only where its space classes are asked for).

`SchedulersView` (`damdjax.views.schedulers`): the servers' multi-agent view, one agent
per server slot, one step per epoch with a pick decision while a dispatch rule plays the
dispatches, with the JaxMARL `MultiAgentEnv` API (duck-typed: jaxmarl is not imported).

`JointView` (`damdjax.views.joint`): the whole epoch, the dispatch and every server's
pick, as one Jumanji `Environment` with specs (a `MultiDiscreteArray` action and an
`action_mask`). It subclasses Jumanji's class, so import it from its module
(`from damdjax.views.joint import JointView`); this package does not, and its import
needs no Jumanji.

`damdjax.views.play` holds what the views share (the epochs played between two of their
agents' decisions, the auto-reset's selection).
"""
from __future__ import annotations

from damdjax.views.dispatcher import Box, DispatcherView, Discrete
from damdjax.views.schedulers import SchedulersView

__all__ = ["Box", "DispatcherView", "Discrete", "SchedulersView"]
