"""`slipway users create-admin`: the first administrator, with no default password."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from slipway.cli.common import app, load_settings

ADMIN_PASSWORD_ENV = "SLIPWAY_ADMIN_PASSWORD"  # noqa: S105 - a variable name, not a secret

users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")


def _read_password(password_file: Path | None) -> str:
    """From --password-file, else $SLIPWAY_ADMIN_PASSWORD, else an interactive prompt."""
    if password_file is not None:
        try:
            # One trailing newline is what `echo pw > file` adds; it is not part of it.
            return password_file.read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            typer.echo(f"slipway: cannot read {password_file}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
    from_env = os.environ.get(ADMIN_PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        typer.echo(
            f"slipway: no password given: use --password-file, {ADMIN_PASSWORD_ENV} "
            "or run in a terminal to be prompted",
            err=True,
        )
        raise typer.Exit(2)
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option("--email", help="The admin's e-mail address.")],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help=f"Read the password from this file (else ${ADMIN_PASSWORD_ENV}, else a prompt).",
            dir_okay=False,
        ),
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make an existing account an admin instead.")
    ] = False,
) -> None:
    """Create an administrator account (verified and active)."""
    from slipway.identity.security import PasswordHasher
    from slipway.identity.service import create_admin as create_admin_account
    from slipway.platform.db.engine import create_engine, create_session_factory
    from slipway.platform.errors import AppError
    from slipway.platform.logging import configure_logging

    settings = load_settings()
    configure_logging("WARNING", settings.effective_log_format)
    password = "" if promote else _read_password(password_file)

    async def run() -> tuple[str, bool]:
        engine = create_engine(settings, null_pool=True)
        try:
            async with create_session_factory(engine)() as session, session.begin():
                user, created = await create_admin_account(
                    session, PasswordHasher(settings), email, password, promote=promote
                )
                return str(user.id), created
        finally:
            await engine.dispose()

    try:
        user_id, created = asyncio.run(run())
    except AppError as exc:
        details = "; ".join(
            f"{d.get('field', '')}: {d.get('message', '')}" for d in (exc.details or [])
        )
        typer.echo(f"slipway: {exc.message}" + (f" ({details})" if details else ""), err=True)
        raise typer.Exit(1) from exc
    action = "created" if created else "promoted"
    typer.echo(f"admin {action}: {user_id}")
