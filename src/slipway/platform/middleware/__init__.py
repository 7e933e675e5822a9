"""Pure ASGI middleware (never BaseHTTPMiddleware: it costs ~120 µs a layer and breaks
contextvars). Each wraps `send` or `receive`; the factory lists them in order."""
