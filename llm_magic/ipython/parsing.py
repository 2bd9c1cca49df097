"""Reading magic lines: ``%ask``'s options and its verbatim prompt, ``%llm``'s words, grammars,
and the input transformer that keeps IPython from reading ``%ask What is X?`` as a help request."""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
from typing import Any

from IPython.core.error import UsageError


def split_words(text: str, command: str = "%llm") -> list[str]:
    """Shell-like split of a ``%llm`` argument line; an unbalanced quote is a UsageError."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"{command}: {e} in {text!r}") from None


def split_options(line: str, value_options: set[str], flag_options: set[str]) -> tuple[str, str]:
    """Split ``line`` into its leading options and the free-text prompt after them.

    The prompt is everything from the first word that is not an option, kept exactly as typed
    (apostrophes and quotes included: it is never shell-split). ``--`` ends the options.
    """
    stream = io.StringIO(line)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    expect_value = False
    while True:
        start = stream.tell()
        try:
            token = lexer.get_token()
        except ValueError:  # an unbalanced quote: the prompt starts here
            return line[:start], line[start:].strip()
        if token is None or token == lexer.eof:
            return line, ""
        if expect_value:
            expect_value = False
            continue
        if token == "--":
            return line[:start], line[stream.tell() :].strip()
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            name = token.split("=", 1)[0]
            if name in value_options:
                expect_value = "=" not in token
                continue
            if name in flag_options:
                continue
            raise UsageError(f"unknown option {name}; see %%ask? for the options")
        return line[:start], line[start:].strip()


def parse_ask_line(parser: argparse.ArgumentParser, line: str) -> tuple[argparse.Namespace, str]:
    """``%ask``'s options (shell-like, quotes removed) and the verbatim prompt after them."""
    value_opts: set[str] = set()
    flag_opts: set[str] = set()
    for action in parser._actions:
        (value_opts if action.nargs != 0 else flag_opts).update(action.option_strings)
    options, words = split_options(line, value_opts, flag_opts)
    try:
        args = parser.parse_args(shlex.split(options))  # quotes removed: --system "Be brief."
    except UsageError:
        raise
    except (ValueError, SystemExit) as e:  # shlex errors; argparse never exits in a MagicArgumentParser
        raise UsageError(f"%ask: {e}") from None
    if args.output is not None and not args.output.isidentifier():
        raise UsageError(f"-o needs a variable name, got {args.output!r}")
    if args.conversation and args.chat:
        raise UsageError("use either -c NAME or --chat (the default conversation), not both")
    return args, words


def read_grammar(value: str) -> str:
    """``--grammar``: a path to a .gbnf file, or the grammar itself."""
    if "::=" in value:
        return value
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise UsageError(f"--grammar: no such file {value!r} (pass a .gbnf file or grammar text with '::=')")
    with open(path, encoding="utf-8") as f:
        return f.read()


def json_grammar() -> str:
    """llama.cpp's JSON grammar, for ``-f json``."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


_ASK_LINE = re.compile(r"^(\s*)%ask(\s.*)$")


def ask_line_transformer(lines: list[str]) -> list[str]:
    """Route ``%ask ... ?`` lines to the magic as written.

    IPython reads a line ending in ``?`` as a help request (``%ask What is X?`` would show help
    for ``X``), and almost every question ends in ``?``. This cleanup transform runs before that
    rule and turns each ``%ask`` line into an explicit ``run_line_magic`` call (which, the magic
    being ``no_var_expand``, passes the line verbatim). ``%ask?`` and ``%%ask`` cells are left alone.
    """
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        match = _ASK_LINE.match(line.rstrip("\n"))
        if match and match.group(2).strip():
            indent, rest = match.group(1), match.group(2).strip()
            out.append(f"{indent}get_ipython().run_line_magic('ask', {rest!r})\n")
        else:
            out.append(line)
    return out


def options_text(options: dict[str, Any], skip: tuple[str, ...] = ("path", "base_url")) -> str:
    """``key=value`` pairs of a model alias, for messages and listings."""
    return " ".join(f"{k}={v}" for k, v in options.items() if k not in skip)
