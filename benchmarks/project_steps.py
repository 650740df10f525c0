"""The project's side of a throughput comparison: whole training steps as a run takes them
(the step, then its metrics line), so logging is part of the figure as it is of a run; the
micro-batches it will train on, for the peer; and a clock on its phases."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import torch


def timed_steps(trainer, steps: int) -> float:
    """Seconds of ``steps`` training steps of ``trainer``, each logged."""
    from megatron_seqpt.training.metrics import Window

    started = time.perf_counter()
    for _ in range(steps):
        window = Window()
        step_started = time.perf_counter()
        record = trainer.train_step()
        window.add(record["loss"], time.perf_counter() - step_started)
        trainer.log_train(record, window)
    return time.perf_counter() - started


def record_batches(stream, count: int) -> list[dict[str, torch.Tensor]]:
    """The stream's next ``count`` micro-batches; the stream is put back where it was."""
    position = stream.state_dict()
    batches = [next(stream) for _ in range(count)]
    stream.load_state_dict(position)
    return batches


class PhaseClock:
    """Seconds spent in the wrapped calls, by phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, call: Callable) -> Callable:
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started

        return timed

    def take(self) -> dict[str, float]:
        seconds = dict(self.seconds)
        self.seconds.clear()
        return seconds


def clocked(trainer, components: bool = False) -> PhaseClock:
    """A clock on the trainer's schedule and optimizer step (it calls both as attributes);
    with ``components`` also on its data, its forward steps and the forward of the model's
    encoder, decoder and vocabulary projection (module hooks)."""
    clock = PhaseClock()
    trainer.forward_backward = clock.wrap("fwd+bwd", trainer.forward_backward)
    trainer.optimizer_step = clock.wrap("optimizer", trainer.optimizer_step)
    if components:
        trainer.forward_step = clock.wrap("forward", trainer.forward_step)
        stream = trainer.data.train
        trainer.data.train = _TimedStream(stream, clock.wrap("data", stream.__next__))
        for module in trainer.modules:
            while hasattr(module, "module"):  # Float16Module
                module = module.module
            for name, phase in (("encoder", "encoder fwd"), ("decoder", "decoder fwd"),
                                ("output_layer", "vocab projection fwd")):
                part = getattr(module, name, None)
                if isinstance(part, torch.nn.Module):
                    _hook(clock, phase, part)
    return clock


class _TimedStream:
    def __init__(self, stream, timed_next: Callable):
        self.stream, self.timed_next = stream, timed_next

    def __iter__(self):
        return self

    def __next__(self):
        return self.timed_next()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _hook(clock: PhaseClock, phase: str, module: torch.nn.Module) -> None:
    started: list[float] = []
    module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))

    def done(*_):
        clock.seconds[phase] += time.perf_counter() - started.pop()

    module.register_forward_hook(done)
