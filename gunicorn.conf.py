"""Gunicorn reads ./gunicorn.conf.py by default: run from the checkout, a bare
`gunicorn 'slipway.app:create_app()'` gets the same configuration as `slipway serve
--server gunicorn`. The settings and their reasons live in slipway.serving.gunicorn_conf."""

from slipway.serving.gunicorn_conf import *  # noqa: F403
