"""`python -m heimdall`: the same as the `heimdall` command."""

from heimdall.cli import run

run()
