"""The ``jex-collector`` command line. Thin: the commands (:mod:`.collect`, :mod:`.archive`,
:mod:`.read`) call the library, and :mod:`.errors` turns its errors into messages and exit
codes (0 fine, 1 a failure, 2 a usage or configuration error)."""

from __future__ import annotations

import signal
import sys

from collector.cli.interrupt import LoadingGuard, by_ctrl_c

# Ctrl-C while Python loads the program: nothing began yet, exit 130. The guard notes the
# signal too, since a library's import may swallow the KeyboardInterrupt it raises (a
# bare `except:` around an optional import) and the program would go on as if no Ctrl-C
# had come.
_guard = LoadingGuard(signal.SIGINT)
try:
    from typing import Any, NoReturn

    import click

    from collector import __version__
    from collector.cli import archive, collect, errors, read
except BaseException as exc:
    if by_ctrl_c(exc) or _guard.interrupted:
        sys.exit(130)
    raise
finally:
    _guard.release()
if _guard.interrupted:
    sys.exit(130)


class _Cli(click.Group):
    """The command group; called as a program (the ``jex-collector`` script, ``python -m
    collector``), it ends the process through :func:`errors.end_program`. ``CliRunner``
    calls :meth:`main` instead, so tests keep their process."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        words = [a for a in (kwargs.get("args") or sys.argv[1:]) if not a.startswith("-")]
        if words[:1] == ["run"]:
            # A daemon process: pandas and matplotlib stay out (collector.collect.lean).
            # Not under CliRunner, whose process goes on to other commands.
            from collector.collect import lean

            lean.keep_out()
            lean.tune_allocators()
        errors.end_program(lambda: self.main(*args, **kwargs))


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jex-collector")
def main() -> None:
    """Archive every JEX market dataset into partitioned Parquet, queryable with DuckDB."""


for _command in (
    collect.run,
    collect.plan,
    collect.sim,
    collect.backfill,
    read.schema,
    read.query,
    read.report,
    archive.views,
    archive.verify,
    archive.compact,
    archive.status,
    archive.migrate,
):
    main.add_command(_command)

run = collect.run  # collector.cli.run: the daemon's command, as before the split

if __name__ == "__main__":
    main()
