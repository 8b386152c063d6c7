"""One harness for the tests and the benchmarks: free ports, processes, a git server, a
PostgreSQL (the machine's or a throwaway cluster), reporun's servers and a client for them.

Nothing here imports pytest: the benchmarks run without it. A part that cannot start, or a
server that does not answer as expected, raises HarnessError; the tests' conftest reports it
as a test failure with its message.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A part of the harness could not start, or a server did not answer as expected."""
