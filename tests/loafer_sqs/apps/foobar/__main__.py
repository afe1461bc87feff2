# Loafer 2.x tutorial, verbatim apart from the import paths; kept as written.
# ruff: noqa
# fmt: off
from loafer_core import LoaferManager
from .routes import routes

manager = LoaferManager(routes=routes)
manager.run()
