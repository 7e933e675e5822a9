"""`slipway db backup` and `slipway db restore` (see docs/runbook/backups.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from slipway.cli.common import app, load_settings

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

db_app = typer.Typer(
    name="db", help="Database backup and restore.", no_args_is_help=True, add_completion=False
)
app.add_typer(db_app, name="db")


class RichProgress:
    """The ops.backup Progress protocol on a rich progress bar (on stderr)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._label = ""

    def start(self, total: int | None, description: str) -> None:
        self._label = description
        self._task = self._progress.add_task(description, total=total)

    def advance(self, completed: int, description: str | None = None) -> None:
        if self._task is None:
            return
        label = self._label if description is None else f"{self._label} {description}"
        self._progress.update(self._task, completed=completed, description=label)


def _progress_bar(enabled: bool) -> Progress:
    # Imported here: every other command starts faster without rich's progress machinery.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


@db_app.command("backup")
def backup_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Backup file to write (never overwritten)."),
    ] = None,
    output_dir: Annotated[
        Path,
        typer.Option(help="Directory for a timestamped backup when --output is not given."),
    ] = Path("backups"),
    keep: Annotated[
        int | None,
        typer.Option(min=1, help="Then delete all but the newest N backups in --output-dir."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Back up DATABASE_URL: pg_dump custom format, or SQLite's online backup API."""
    from slipway.ops.backup import BackupError, backup, default_filename, prune

    settings = load_settings()
    target = output or output_dir / default_filename(settings)
    try:
        with _progress_bar(progress) as bar:
            result = backup(settings, target, RichProgress(bar))
    except BackupError as error:
        typer.echo(f"slipway db backup: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(
        f"backup written: {result.path} ({result.backend}, {result.size_bytes} bytes, "
        f"{result.seconds:.1f}s)"
    )
    if keep is not None and output is None:
        for path in prune(output_dir, keep):
            typer.echo(f"pruned: {path}")


@db_app.command("restore")
def restore_command(
    source: Annotated[Path, typer.Argument(help="A file `slipway db backup` wrote.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database that already has tables.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Restore a backup into DATABASE_URL (an empty database unless --force)."""
    from slipway.ops.backup import BackupError, restore

    settings = load_settings()
    try:
        with _progress_bar(progress) as bar:
            seconds = restore(settings, source, RichProgress(bar), force=force)
    except BackupError as error:
        typer.echo(f"slipway db restore: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"restored {source} in {seconds:.1f}s")
