"""``%llm``'s subcommands as a table: each entry carries its usage and help, so dispatch and
``%llm help`` come from one place. Commands register with ``@command`` (see ``model_commands``
and ``session_commands``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import LLMMagicError

if TYPE_CHECKING:
    from .magics import AskMagics

Handler = Callable[["AskMagics", str], Any]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str  # what follows "%llm "
    help: str
    run: Handler


COMMANDS: dict[str, Command] = {}
# Help lists model commands first, then session ones, each in the order its module defines them
# (whichever module happens to be imported first).
MODULES = ("llm_magic.ipython.model_commands", "llm_magic.ipython.session_commands")


def listed() -> list[Command]:
    """The commands in help order."""

    def rank(c: Command) -> tuple[int, int]:
        module = c.run.__module__
        where = MODULES.index(module) if module in MODULES else len(MODULES)
        return where, c.run.__code__.co_firstlineno

    return sorted(COMMANDS.values(), key=rank)


def command(usage: str, help: str) -> Callable[[Handler], Handler]:
    """Register a ``%llm`` subcommand: ``usage`` starts with its name."""

    def register(fn: Handler) -> Handler:
        name = usage.split()[0]
        COMMANDS[name] = Command(name, usage, help, fn)
        return fn

    return register


def usage_error(name: str, hint: str = "") -> UsageError:
    """The one-line error for a malformed ``%llm NAME`` line, from the table's usage."""
    return UsageError(f"usage: %llm {COMMANDS[name].usage}{'   (' + hint + ')' if hint else ''}")


def dispatch(magics: AskMagics, line: str) -> Any:
    """Run ``%llm LINE``: the first word picks the command; core errors become one-line UsageErrors."""
    words = line.split(maxsplit=1)
    if not words:
        raise UsageError(f"%llm needs a subcommand: {', '.join(c.name for c in listed())} (%llm help)")
    name, rest = words[0], (words[1] if len(words) > 1 else "")
    entry = COMMANDS.get(name)
    if entry is None:
        raise UsageError(f"%llm: unknown subcommand {name!r}; try %llm help")
    try:
        return entry.run(magics, rest)
    except LLMMagicError as e:
        raise UsageError(str(e)) from None


def help_text() -> str:
    commands = listed()
    width = max(len(c.usage) for c in commands) + 6
    return "\n".join(f"{'%llm ' + c.usage:<{width}} {c.help}" for c in commands)
