"""The ``modrpc`` command line: up, gateway, worker, gen, token, versions."""

from runtime.cli._main import main

__all__ = ["main"]
