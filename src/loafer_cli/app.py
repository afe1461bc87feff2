"""The ``loafer`` command's entry point (a Typer application)."""

from __future__ import annotations

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="loafer",
    help="Run loafer-core routes as a service, check them, list providers, publish messages.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """loafer-core's command line."""


def main() -> None:
    """Console-script entry point."""
    app()
