"""Typed run configuration: YAML + ``section.key=value`` overrides, validated, dumped resolved."""

from megatron_seqpt.config.loader import ConfigError, dump, load
from megatron_seqpt.config.schema import RunConfig


def load_run_config(path=None, overrides=()) -> RunConfig:
    return load(RunConfig, path, overrides)


__all__ = ["ConfigError", "RunConfig", "dump", "load", "load_run_config"]
