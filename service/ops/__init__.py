"""Operations: Prometheus metrics, structured logs with request ids, graceful shutdown and the worker
supervisor. Imports only errors and settings, so every other package may use it.
"""
