"""Identity and access: accounts, JWT access tokens, rotating refresh tokens, roles.

Other areas use `slipway.identity.deps` (`CurrentUser`, `StaffUser`, `AdminUser`) and, for
connections without FastAPI dependencies (WebSockets), `token_verifier(app)`.
"""
