"""How Slipway is served: the gunicorn configuration and worker, CPU-aware concurrency, the
keep-alive-safe HTTP protocol and the testing-only probe routes of the lifecycle tests."""
