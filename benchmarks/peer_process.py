"""A peer timed in a process of its own: the same script started with ``--peer``, fed JSON
requests on stdin, answering one JSON line each. The peer's process imports neither the project
nor its CPU compatibility layer (whose process-wide function mode would slow every torch call
of the peer), so both sides run as they would alone."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def add_peer_arguments(parser: argparse.ArgumentParser, rounds: int = 5) -> None:
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads, the same in both processes")
    parser.add_argument("--peer-allocator", choices=("system", "tcmalloc"), default="system",
                        help="the peer's malloc: system (a clean process, as transformers runs "
                             "by default; the default) or tcmalloc (what seqpt and the project "
                             "side of this benchmark run on where the machine has it)")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)


# The phases a peer's step is timed in.
PEER_PHASES = ("fwd+bwd", "optimizer")


def hf_optimizer(model: torch.nn.Module, optim: dict) -> torch.optim.Optimizer:
    """AdamW as the project sets it up: no weight decay on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim > 1], "weight_decay": optim["weight_decay"]},
         {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
        lr=optim["lr"], betas=optim["betas"], eps=optim["eps"])


def hf_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict],
             micro: int, first_step: int, steps: int, clip: float) -> dict[str, float]:
    """Seconds of ``steps`` steps from ``first_step`` on (``micro`` micro-batches each:
    forward, backward, clipping, AdamW), and of their phases."""
    phases = dict.fromkeys(PEER_PHASES, 0.0)
    model.train()
    started = time.perf_counter()
    for step in range(first_step, first_step + steps):
        phase_started = time.perf_counter()
        for batch in batches[step * micro:(step + 1) * micro]:
            (model(**batch).loss / micro).backward()
        optimizer_started = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases["fwd+bwd"] += optimizer_started - phase_started
        phases["optimizer"] += time.perf_counter() - optimizer_started
    return {"total": time.perf_counter() - started, **phases}


def serve(models: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
          batches: list[dict], micro: int, clip: float) -> None:
    """The peer's loop: one line about itself, then per request line (model, first_step,
    steps) the seconds of those steps as one JSON line."""
    import transformers

    assert not [name for name in sys.modules if name.startswith("megatron")]
    attention = {name: model.config._attn_implementation for name, model in models.items()}
    print(json.dumps({"transformers": transformers.__version__, "attention": attention,
                      "allocator": allocator_in_use()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        name = request["model"]
        print(json.dumps(hf_steps(models[name], optimizers[name], batches, micro,
                                  request["first_step"], request["steps"], clip)), flush=True)


def allocator_in_use() -> str:
    """``tcmalloc`` where this process has it mapped, else ``system`` (read here rather than
    from the project, which the peer's process does not import)."""
    with open("/proc/self/maps") as maps:
        return "tcmalloc" if "libtcmalloc" in maps.read() else "system"


def peer_environment(allocator: str) -> dict[str, str]:
    """This process's environment for a peer on ``allocator`` (the project's side of a
    benchmark may have re-executed itself on tcmalloc, which a child would inherit)."""
    from megatron_seqpt.runtime.allocator import environment

    return environment(os.environ, allocator)


class PeerProcess:
    """``script --peer``, given ``setup`` as its first request; ``ask`` sends the next."""

    def __init__(self, script: str, setup: dict, env: dict[str, str] | None = None):
        self.process = subprocess.Popen([sys.executable, script, "--peer"], text=True, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.info = self.ask(setup)

    def ask(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
