"""Deprecated name of :mod:`loafer_core.handlers` (several handlers on one route): it sat
beside the unrelated :mod:`loafer_core.dispatcher`. Import from ``loafer_core.handlers``
(or ``loafer_core``); this module goes in 3.1."""

from __future__ import annotations

import warnings

from loafer_core.handlers import Discriminator, Entry, Handlers, field, header, on

__all__ = ["Discriminator", "Entry", "Handlers", "field", "header", "on"]

warnings.warn(
    "loafer_core.dispatch is now loafer_core.handlers (Handlers, header, field, on are also "
    "in loafer_core); the old name goes in 3.1",
    DeprecationWarning,
    stacklevel=2,
)
