"""Named points inside a stage where the fault suite kills the run as ``kill -9`` would.

A kill sent from outside lands where a poll happens to see something: at a stage line, or while
MLflow holds a model PENDING. Between two writes that follow each other within milliseconds
(a version created, then its alias moved) no poll can aim. ``TRUSTFLOW_FAILPOINT=<point>`` arms
one point: the process that reaches it sends SIGKILL to its process group (to itself alone when
it does not lead one), so nothing of ours runs after it, exactly as with an outside kill. Unset,
a point costs one environment lookup. Only ``tests/faults`` sets it.
"""

from __future__ import annotations

import os
import signal

ENV = "TRUSTFLOW_FAILPOINT"

POINTS = frozenset(
    {
        "ledger.measured",  # a DP release measured, not yet in the ledger
        "ledger.written",  # the release in the ledger, the preprocessor not yet fitted from it
        "train.saved",  # a candidate's model file written, its task not yet finished
        "register.created",  # a model version created, the register stage not yet done
        "promote.moved",  # the alias moved, the outcome not yet recorded nor the run ended
    }
)


def failpoint(point: str) -> None:
    """Die here, unrecoverably, when ``point`` is the armed one."""
    if point not in POINTS:
        raise ValueError(f"unknown failpoint {point!r}")
    if os.environ.get(ENV) != point:
        return
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
