"""megatron_seqpt: sequential pre-training of multilingual encoders and seq2seq models on
megatron-core."""

import warnings

from megatron_seqpt.runtime import child_processes, lazy_fusions

__version__ = "0.1.0"

# megatron-core warns at import about each GPU package it does not find; the run log states
# once which backend (transformer-engine, apex, local) is in use instead.
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*not installed.*")

# A spawned child of a run (a local rank, a helper) imports this package with the run's main
# module; it should not outlive a killed run.
child_processes.die_with_spawning_parent()

# megatron-core's fusions are compiled when first called, not at import (seconds of each
# process's start; runtime/lazy_fusions.py).
lazy_fusions.install()
