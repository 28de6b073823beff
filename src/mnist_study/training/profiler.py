"""The Trainer's profiler when none is asked for (trainer.profiler=null).

Lightning wraps every hook it calls in `trainer.profiler.profile(<action>)`: about a hundred calls per training
step with this project's callbacks. Its default, PassThroughProfiler, records nothing but still builds a
generator-based context manager for each, which costs a small network a measurable share of its step
(docs/PERFORMANCE.md). NoProfiler records nothing either and hands out one shared, reusable null context.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

NOTHING: AbstractContextManager[None] = nullcontext()


class NoProfiler(PassThroughProfiler):
    def profile(self, action_name: str) -> AbstractContextManager[None]:  # type: ignore[override]
        return NOTHING
