"""``%llm`` commands about this session's work: explain, history, reset, panel, help."""

from __future__ import annotations

from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from .. import runtime
from .command_table import command, help_text, usage_error
from .parsing import parse_ask_line, split_words

if TYPE_CHECKING:
    from .magics import AskMagics

EXPLAIN_PROMPT = """This code, run in a Jupyter notebook cell, raised an error.

Code:
```python
{source}
```

Error:
```
{traceback}
```

Explain the cause of the error, then show how to fix it."""


@command("explain [ask options]", "ask the model for the cause and a fix of the last error")
def explain(magics: AskMagics, rest: str) -> None:
    last = magics.cell_errors.last()
    if last is None:
        raise UsageError("no error to explain yet: %llm explain looks at the last cell that raised")
    args, words = parse_ask_line(magics.ask.parser, rest)
    prompt = EXPLAIN_PROMPT.format(source=last.source.strip(), traceback=last.traceback)
    if words:
        prompt += f"\n\n{words}"
    magics.ask_with(args, prompt, interpolate=False)


@command("history [NAME]", "show a conversation (all of them without NAME)")
def history(magics: AskMagics, rest: str) -> None:
    words = split_words(rest)
    if len(words) > 1:
        raise usage_error("history")
    found = runtime.get().conversations.find(words[0] if words else None)
    if not found:
        print(f"no conversation {words[0]!r} yet" if words else "no conversations yet (%%ask -c NAME or --chat)")
        return
    for conv in found:
        trimmed = f", {conv.trimmed} older trimmed to fit the context" if conv.trimmed else ""
        print(
            f"conversation {conv.name!r} on {conv.model_name}: {len(conv.turns)} turn"
            f"{'s' if len(conv.turns) != 1 else ''}{trimmed}"
        )
        if conv.system:
            print(f"  system: {conv.system}")
        for i, turn in enumerate(conv.turns, 1):
            mark = "" if turn.finish_reason in ("stop", "length") else f" [{turn.finish_reason}]"
            print(f"  [{i}] user: {turn.user.strip()}")
            print(f"      assistant{mark}: {turn.answer.strip()}")


@command("reset [NAME]", "forget a conversation (all of them without NAME)")
def reset(magics: AskMagics, rest: str) -> None:
    words = split_words(rest)
    if len(words) > 1:
        raise usage_error("reset")
    n = runtime.get().conversations.reset(words[0] if words else None)
    what = f"conversation {words[0]!r}" if words else "all conversations"
    print(f"forgot {what} ({n} on {n} model{'s' if n != 1 else ''})" if n else f"no {what} to forget")


@command("panel", "an interactive ask panel (the kernel stays free while it streams)")
def panel(magics: AskMagics, rest: str) -> None:
    from .. import panel as show_panel

    if rest.strip():
        raise usage_error("panel", "set defaults with llm_magic.panel(model=..., max_tokens=...)")
    show_panel()


@command("complete on|off", "JupyterLab's inline completions from the kernel's model (AskMagics.inline_completion)")
def complete(magics: AskMagics, rest: str) -> None:
    words = split_words(rest)
    if len(words) > 1 or (words and words[0] not in ("on", "off")):
        raise usage_error("complete")
    if words:
        magics.inline_completion = words[0] == "on"
    model = magics.completion_model or "the default model"
    print(f"inline completions are {'on' if magics.inline_completion else 'off'} ({model})")
    if words == ["on"]:  # typing never loads a model: load it now, so the first keystroke finds it warm
        from ..errors import LLMMagicError
        from ..specs import resolve

        try:
            spec = resolve(magics.completion_model or None)
            if spec.remote:
                print(f"{spec.display_name} is a remote model: completions need a local one")
            else:
                runtime.get().cache.load(spec, replace=False)
        except LLMMagicError as e:
            print(f"cannot load {model}: {e}")


@command("help", "this list")
def help(magics: AskMagics, rest: str) -> None:
    print(help_text())
