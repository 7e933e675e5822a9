"""Background jobs: state in the application database, run by Celery or in-process."""
