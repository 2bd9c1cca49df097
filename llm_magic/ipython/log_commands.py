"""``%llm log [N] [--search TEXT]`` (the ask log) and ``%llm last [--prompt]`` (the last answer and
the exact prompt the model received)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from .. import ask_log, runtime
from .command_table import command, usage_error
from .parsing import split_words

if TYPE_CHECKING:
    from .magics import AskMagics


def _short(text: str, width: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@command("log [N] [--search TEXT]", "the last N asks from the ask log (default 10); --search: those with TEXT")
def show_log(magics: AskMagics, rest: str) -> None:
    words = split_words(rest)
    search = None
    if "--search" in words:
        at = words.index("--search")
        search = " ".join(words[at + 1 :]).strip()
        words = words[:at]
        if not search:
            raise usage_error("log", "--search needs the text to look for")
    if len(words) > 1 or (words and not (words[0].isdigit() and int(words[0]) > 0)):
        raise usage_error("log", "N is a positive number")
    n = int(words[0]) if words else 10
    path = ask_log.configured_path()
    book = ask_log.get(path)
    if book is None or path is None:
        raise UsageError("the ask log is off (AskMagics.log = False); set it to True or a path to keep one")
    try:
        records = book.recent(n, search=search)
    except (sqlite3.Error, OSError) as e:
        raise UsageError(f"cannot read the ask log {path}: {type(e).__name__}: {e}") from None
    if not records:
        print(f"no asks with {search!r} in {path}" if search else f"no asks in {path} yet")
        return
    for r in records:
        tokens = f"{r.n_tokens} token{'s' if r.n_tokens != 1 else ''}"
        took = f", {r.total_s:.2f} s" if r.total_s is not None else ""
        print(f"#{r.id}  {r.created}  {r.model}  {r.finish_reason}, {tokens}{took}")
        print(f"  Q: {_short(r.prompt)}")
        print(f"  A: {_short(r.answer)}")


@command("last [--prompt]", "the last answer: model, outcome, provenance; --prompt: the exact text the model received")
def last(magics: AskMagics, rest: str) -> None:
    words = split_words(rest)
    if words not in ([], ["--prompt"]):
        raise usage_error("last")
    answer = runtime.get().last_answer
    if answer is None:
        raise UsageError("no answer yet in this kernel")
    if words == ["--prompt"]:
        if not answer.prompt:
            raise UsageError("the last ask never reached the model: there is no prompt to show")
        print(answer.prompt)
        return
    meta = answer.provenance or {}
    replayed = " (replayed from the ask log)" if answer.replayed else ""
    print(f"{answer.model}: {answer.finish_reason}, {answer.n_tokens} tokens, {answer.n_prompt_tokens} prompt tokens")
    print(f"total {answer.total_s:.2f} s{replayed}" + (f"; log #{meta['log_id']}" if meta.get("log_id") else ""))
    if meta.get("sha256"):
        print(f"model file sha256 {meta['sha256']}")
    elif meta.get("base_url"):
        print(f"server {meta['base_url']}, model {meta.get('remote_model') or '-'}")
    print("%llm last --prompt shows the exact prompt the model received")
