"""``seqpt env``: what a run started here would use, without starting one."""

import argparse
import importlib.metadata
import os

from megatron_seqpt.runtime import allocator, backend, launch_env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    found = backend.detect()
    launch = launch_env.detect()
    print(f"backend:  {found.describe()} (torch.distributed: {found.dist_backend})")
    print(f"launcher: {launch.launcher} rank={launch.rank} world_size={launch.world_size} "
          f"local_rank={launch.local_rank} rendezvous={launch.init_method}")
    library = allocator.find_tcmalloc()
    print(f"allocator: {allocator.loaded()} (tcmalloc library: "
          f"{library or 'none found; apt-get install libtcmalloc-minimal4'}; "
          f"{allocator.ENV_CHOICE}={allocator.wanted(os.environ)})")
    for package in ("megatron-core", "sentencepiece", "nltk", "transformer-engine"):
        print(f"{package + ':':<20}{_version(package)}")
    return 0
