"""One module per ``seqpt`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
