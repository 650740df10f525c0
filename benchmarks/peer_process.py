"""A peer timed in a process of its own: the same script started with ``--peer``, fed JSON
requests on stdin, answering one JSON line each. The peer's process imports neither the project
nor its CPU compatibility layer (whose process-wide function mode would slow every torch call
of the peer), so both sides run as they would alone."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch


def add_peer_arguments(parser: argparse.ArgumentParser, rounds: int = 5) -> None:
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads, the same in both processes")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)


class PeerProcess:
    """``script --peer``, given ``setup`` as its first request; ``ask`` sends the next."""

    def __init__(self, script: str, setup: dict):
        self.process = subprocess.Popen([sys.executable, script, "--peer"], text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.info = self.ask(setup)

    def ask(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
