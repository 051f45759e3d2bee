"""The run's interrupt handling in process (the fault suite drives it from outside, with real
signals on real runs)."""

from __future__ import annotations

import gc
import signal

import pytest

from flows.interrupts import Interrupts
from flows.progress import StageLog


class InterruptedWhileCollected:
    """A finalizer the signal's KeyboardInterrupt lands in: Python ignores exceptions there."""

    def __del__(self) -> None:
        raise KeyboardInterrupt


def test_an_interrupt_python_swallowed_stops_the_next_stage_without_noise(capsys) -> None:
    # Seen under load: SIGTERM while the model card was written landed in such a finalizer,
    # printed "Exception ignored in ... KeyboardInterrupt", and the run went on to move the
    # alias before the watchdog ended it.
    with Interrupts(lambda signum: None) as interrupts:
        interrupts.signum = signal.SIGTERM  # what the handler records before it raises
        InterruptedWhileCollected()
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            StageLog()._start("promote")
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err
