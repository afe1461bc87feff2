"""The ``loafer`` command: run routes as a service (``loafer run``), check them, list the
installed provider plugins, publish messages.

Built on Typer and Rich, imported only here: ``import loafer_core`` imports neither.
"""

from __future__ import annotations

__all__: list[str] = []
