"""Operational tooling: `slipway doctor` (audit from inside) and `slipway probe` (from outside).

Both turn the production checklists of the source documents into programs that share one
result model (`checks.py`): every check has an id, a title, a severity, a status
(pass/warn/fail), a one-line detail and a one-line fix.
"""
