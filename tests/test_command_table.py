"""llm_magic.ipython.command_table: %llm's subcommands as one table (dispatch and help)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from llm_magic.errors import ConfigError
from llm_magic.ipython import command_table
from llm_magic.ipython.command_table import COMMANDS, Command, help_text, listed

from conftest import run, run_error

EXPECTED = {
    "status",
    "load",
    "unload",
    "alias",
    "aliases",
    "models",
    "explain",
    "history",
    "reset",
    "panel",
    "complete",
    "help",
    "log",
    "last",
}


def test_the_table_holds_every_subcommand_once_the_magics_are_imported():
    import llm_magic.ipython.magics  # noqa: F401 - importing it fills the table

    assert set(COMMANDS) == EXPECTED
    for name, entry in COMMANDS.items():
        assert entry.name == name and entry.usage.split()[0] == name
        assert entry.help and callable(entry.run)


def test_help_is_generated_from_the_table(ip):
    _, out = run(ip, "%llm help")
    assert out.strip() == help_text().strip()
    lines = out.strip().splitlines()
    assert len(lines) == len(COMMANDS)
    assert [c.name for c in listed()][:3] == ["status", "load", "unload"]  # model commands first, as defined
    for entry, line in zip(listed(), lines, strict=True):  # in the table's order, one line each
        assert line.startswith(f"%llm {entry.usage} ") and line.endswith(entry.help)
    columns = {line.index(entry.help) for entry, line in zip(listed(), lines, strict=True)}
    assert len(columns) == 1  # the help texts line up


def test_a_registered_command_appears_in_help_and_dispatches(ip, monkeypatch):
    seen = []
    monkeypatch.setitem(
        COMMANDS, "echo", Command("echo", "echo TEXT", "print TEXT back", lambda m, rest: seen.append(rest))
    )
    _, out = run(ip, "%llm help")
    assert "%llm echo TEXT" in out and "print TEXT back" in out
    ip.user_ns["x"] = "EXPANDED"
    run(ip, "%llm echo it's  $x and {1+1}")
    assert seen == ["it's  $x and {1+1}"]  # verbatim: no IPython expansion, spacing kept


def test_the_command_decorator_registers_by_the_first_word_of_usage(monkeypatch):
    monkeypatch.setattr(command_table, "COMMANDS", {})

    @command_table.command("frob NAME [--hard]", "frobnicate")
    def frob(magics, rest):
        return rest

    assert list(command_table.COMMANDS) == ["frob"]
    entry = command_table.COMMANDS["frob"]
    assert (entry.usage, entry.help, entry.run) == ("frob NAME [--hard]", "frobnicate", frob)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%llm frobnicate", "%llm: unknown subcommand 'frobnicate'; try %llm help"),
        ("%llm", "%llm needs a subcommand: status, load"),
        ("%llm   ", "%llm needs a subcommand"),
    ],
)
def test_unknown_or_missing_subcommand_is_a_usage_error(ip, line, message):
    error, out = run_error(ip, line)
    assert isinstance(error, UsageError) and message in str(error) and "\n" not in str(error)
    assert "Traceback" not in out


def test_core_errors_become_one_line_usage_errors(ip, monkeypatch):
    def fail(magics, rest):
        raise ConfigError("the model said no")

    monkeypatch.setitem(COMMANDS, "fail", Command("fail", "fail", "always fails", fail))
    error, out = run_error(ip, "%llm fail")
    assert isinstance(error, UsageError) and str(error) == "the model said no"
    assert error.__cause__ is None and error.__suppress_context__  # no chained traceback
    assert "Traceback" not in out
