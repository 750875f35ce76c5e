"""Heimdall: locate radio transmitters from simultaneous multi-receiver recordings."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("heimdall-rf")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
