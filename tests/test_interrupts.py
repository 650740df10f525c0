"""A latched interrupt: raised again at each check once raised, and Python's report of its
dropped copy kept quiet, other dropped exceptions still reported. Items produced by a helper
thread and waited for in short waits: in order, with the producer's error, and a producer that
ends when the consumer leaves."""

import itertools
import sys
import threading

import pytest

from megatron_seqpt.runtime.interrupts import LatchedInterrupt, waited_in_short_waits


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


def test_items_waited_for_arrive_in_order_and_the_producers_error_reaches_the_consumer():
    def items():
        yield from range(5)
        raise OSError(5, "Input/output error")

    received = []
    with pytest.raises(OSError, match="Input/output error"):
        for item in waited_in_short_waits(items(), "producer-with-an-error"):
            received.append(item)
    assert received == list(range(5))


def test_a_consumer_that_leaves_early_ends_the_producer():
    produced = []

    def items():
        for number in itertools.count():
            produced.append(number)
            yield number

    consumer = waited_in_short_waits(items(), "producer-left-early")
    assert next(consumer) == 0
    producer = next(t for t in threading.enumerate() if t.name == "producer-left-early")
    consumer.close()
    producer.join(timeout=10)
    assert not producer.is_alive()
    assert len(produced) <= 3  # one handed over, one waiting, one being made
