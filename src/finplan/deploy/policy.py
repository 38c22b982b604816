"""Exit policies: when does a sample leave at an exit head.

The scorers live in ``finplan.exit_policy``, below deploy and the profiler, so that the
profiler can time the runtime's own stage code; this module keeps the deploy-side names.
"""
from __future__ import annotations

from finplan.exit_policy import SCORERS, exits_here, max_probability, max_softmax, score

__all__ = ["SCORERS", "exits_here", "max_probability", "max_softmax", "score"]
