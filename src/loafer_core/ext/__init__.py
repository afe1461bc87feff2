"""Optional integrations, each needing an extra; ``import loafer_core`` imports none of
them, nor their libraries.

- :mod:`loafer_core.ext.sentry`: an error handler reporting to Sentry (extra ``sentry``),
  the successor of Loafer 2.x's ``loafer.ext.sentry``.
- :mod:`loafer_core.ext.redis_store`: a Redis store for the idempotency middleware
  (extra ``redis``).
- :mod:`loafer_core.ext.otel`: OpenTelemetry tracing across brokers (extra ``otel``):
  consumer spans by a middleware, producer spans in loafer's publishers.
"""
