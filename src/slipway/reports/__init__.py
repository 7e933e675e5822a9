"""Staff reporting: CSV sales reports built by a background job, and the dashboard."""
