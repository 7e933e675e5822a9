"""Outbound webhooks: staff-registered endpoints receive signed order events."""
