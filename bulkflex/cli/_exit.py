"""Exit statuses of the command line: the contract scripts and the tests rely on.

Errors carry their own status (``BulkflexError.exit_code``, see :mod:`bulkflex.errors`); these
names are for the outcomes a command decides itself.
"""

OK = 0  # every entry downloaded and verified (or nothing to do)
FAILED = 1  # some entries failed: listed, state kept, run again to retry them
USAGE = 2  # bad input: flags, manifest line, CQL2 filter, unsafe path
AUTH = 3  # a token is needed and none could be had
DESTINATION = 4  # disk full, permission denied, read-only destination
INTERRUPTED = 130  # Ctrl-C or SIGTERM: progress kept
