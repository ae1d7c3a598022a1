"""How errors reach the user: one `error: ...` line for what they can fix, a traceback for bugs."""

from __future__ import annotations

import re

import click

from feedback_loop_dagster.lib.errors import UserError


class ErrorLine(click.ClickException):
    """What the user sees of an error they can fix: one `error: ...` line, exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _one_line(text: str) -> str:
    """A message on one line (a database driver's message may span several)."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _usage_line(exc: click.UsageError) -> str:
    message = exc.format_message()
    message = message[:1].lower() + message[1:] if message[1:2].islower() else message
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return _one_line(message).rstrip(".") + hint


class LoopGroup(click.Group):
    """The error rules of README's command-line section, for every subcommand.

    A `UserError` (storage, registry, policy, input, unknown name) and a usage error (a bad
    option value, a missing argument) print one `error: ...` line and exit with status 1; with
    `--debug` a user error shows its traceback instead. Anything else is a bug: its traceback
    shows. A failed run exits with status 2 (the `run` and `backfill` commands).
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise self._usage(exc) from exc

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise self._usage(exc) from exc
        except UserError as exc:
            if ctx.params.get("debug"):
                raise
            raise ErrorLine(_one_line(str(exc))) from exc

    @staticmethod
    def _usage(exc: click.UsageError) -> click.ClickException:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            exc.exit_code = 1  # a group without its subcommand: the help, as click shows it
            return exc
        return ErrorLine(_usage_line(exc))
