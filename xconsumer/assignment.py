"""The assignment strategies' public names, kept here for existing imports.

The strategies became a family: `xconsumer.strategies` (one module per strategy, a shared
`base`, a registry by name). New code imports from there.
"""

from __future__ import annotations

from .strategies import *  # noqa: F403
from .strategies import __all__  # noqa: F401
