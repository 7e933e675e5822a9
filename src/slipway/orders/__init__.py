"""Orders: idempotent creation that never oversells, enforced status transitions."""
