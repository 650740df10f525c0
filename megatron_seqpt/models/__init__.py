"""megatron-core models: the MLM encoder and T5, their layer specs and forward steps."""
