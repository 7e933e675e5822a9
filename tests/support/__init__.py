"""Test harness: real PostgreSQL, Redis and other processes on loopback (see services.py)."""
