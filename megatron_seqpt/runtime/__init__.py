"""Process start-up: launcher environment, CPU/GPU backend, megatron-core parallel state."""
