"""Views of the edge environment for code written against other environment APIs.

`DispatcherView` (`damdjax.views.dispatcher`): the single-agent dispatcher's view, one
step per dispatch decision, with the gymnax `Environment` API (duck-typed: gymnax is an
optional extra, imported only where its space classes are asked for).
"""
from __future__ import annotations

from damdjax.views.dispatcher import Box, DispatcherView, Discrete

__all__ = ["Box", "DispatcherView", "Discrete"]
