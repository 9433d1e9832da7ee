"""One module per ``edgesteer`` subcommand; each has ``add_parser(subparsers)`` and ``run(args)``.

``run`` returns the process exit code: 0 success, 1 runtime failure, 2 bad input (config,
arguments). Commands that print a report take ``--json``.
"""
