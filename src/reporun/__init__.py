"""reporun: run git repositories as sandboxed jobs."""

__version__ = "0.1.0"
