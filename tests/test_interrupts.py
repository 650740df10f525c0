"""A latched interrupt: raised again at each check once raised, and Python's report of its
dropped copy kept quiet, other dropped exceptions still reported."""

import sys

import pytest

from megatron_seqpt.runtime.interrupts import LatchedInterrupt


class _RaisesWhenCollected:
    """Python drops (and reports) what a finalizer raises, as it does in at-fork hooks."""

    def __init__(self, error: BaseException):
        self.error = error

    def __del__(self):
        raise self.error


def test_only_the_latched_interrupts_dropped_copy_is_kept_quiet():
    reported = []
    before = sys.unraisablehook

    def report(unraisable):
        reported.append(type(unraisable.exc_value))

    sys.unraisablehook = report
    try:
        with LatchedInterrupt() as interrupt:
            interrupt.raise_if_set()  # nothing raised yet
            _RaisesWhenCollected(KeyboardInterrupt())  # not this interrupt's: reported
            with pytest.raises(KeyboardInterrupt, match="signal 15"):
                interrupt.raise_("signal 15")
            _RaisesWhenCollected(KeyboardInterrupt())  # its dropped copy: quiet
            _RaisesWhenCollected(ValueError("a finalizer's own error"))  # reported
            for _ in range(2):
                with pytest.raises(KeyboardInterrupt, match="signal 15"):
                    interrupt.raise_if_set()
        assert sys.unraisablehook is report  # put back on exit
    finally:
        sys.unraisablehook = before
    assert reported == [KeyboardInterrupt, ValueError]
