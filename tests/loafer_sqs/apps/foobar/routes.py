# Loafer 2.x tutorial, verbatim apart from the import paths; kept as written.
# ruff: noqa
# fmt: off
from loafer_sqs import SQSRoute
from .handlers import print_handler, error_handler

# assuming a queue named "loafer-test"
routes = (
    SQSRoute('loafer-test', {'options': {'WaitTimeSeconds': 3}},
             handler=print_handler,
             error_handler=error_handler),
)
