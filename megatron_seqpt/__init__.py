"""megatron_seqpt: sequential pre-training of multilingual encoders and seq2seq models on
megatron-core."""

import warnings

__version__ = "0.1.0"

# megatron-core warns at import about each GPU package it does not find; the run log states
# once which backend (transformer-engine, apex, local) is in use instead.
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*not installed.*")
