"""Output formats of ``%%ask -f``: markdown, text, code, json."""

from __future__ import annotations

import ast
import json
import re
import textwrap
import warnings
from typing import Any

from ..answer import Answer
from ..errors import LLMMagicError

FORMATS = ("markdown", "text", "code", "json")
NO_CODE_BLOCK = "no code block in the answer"

# an answer made only of these parses as Python but is prose ("Paris", "yes and no", "apples, pears")
_PROSE_NODES = (
    ast.Module,
    ast.Expr,
    ast.Name,
    ast.Constant,
    ast.Tuple,
    ast.Attribute,
    ast.BoolOp,
    ast.UnaryOp,
    ast.BinOp,
    ast.Compare,
    ast.expr_context,
    ast.boolop,
    ast.unaryop,
    ast.operator,
    ast.cmpop,
)

_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+.#-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)


class FormatError(LLMMagicError, ValueError):
    """The answer is not in the format asked for (it is still in ``llm_magic.last_answer()``)."""

    user_error = True


def first_code_block(text: str) -> str | None:
    """The body of the first fenced code block (``` or ~~~), or None if there is none."""
    match = _FENCE.search(text)
    return match.group(3).rstrip("\n") if match else None


def is_python_code(text: str) -> bool:
    """Does ``text`` parse as Python, and is it more than words that happen to parse (a name, a
    constant, ``a and b``)? A statement, a call, a subscript, a literal container: code."""
    try:
        with warnings.catch_warnings():  # "\d" in a string: SyntaxWarning, not our business
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if len(tree.body) == 1 and _looks_like_prose(tree.body[0]):
        return False
    return not all(isinstance(node, _PROSE_NODES) for node in ast.walk(tree))


def _looks_like_prose(stmt: ast.stmt) -> bool:
    """One line that parses but reads as prose: ``Answer: 42`` (an annotation without a value) or
    ``Paris (France)`` (a capitalised word "called" with plain words)."""
    if isinstance(stmt, ast.AnnAssign):
        return stmt.value is None and isinstance(stmt.target, ast.Name)
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        call = stmt.value
        return (
            isinstance(call.func, ast.Name)
            and call.func.id[:1].isupper()
            and not call.keywords
            and all(isinstance(a, ast.Name) for a in call.args)
        )
    return False


def code_for_next_cell(answer: str) -> str | None:
    """``-f code``: the first fenced block with some code in it, else the whole answer if it is a
    bare code answer (Python without fences); None when there is no code to insert."""
    text = str.__str__(answer)
    for match in _FENCE.finditer(text):  # the first block with something in it
        block = match.group(3).rstrip("\n")
        if block.strip():
            return block
    bare = textwrap.dedent(text).strip()
    return bare if is_python_code(bare) else None


def parse_json_answer(answer: str) -> Any:
    """Parse the answer as JSON: the whole text, else its first fenced block. Raises ``FormatError``."""
    text = str.__str__(answer).strip()
    candidates = [text]
    block = first_code_block(text)
    if block is not None:
        candidates.append(block.strip())
    error = None
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as e:
            error = error or e
            continue
        if isinstance(answer, Answer):  # the Answer keeps the parsed object too
            answer.value = value
        return value
    assert error is not None  # at least one candidate was tried
    shown = text if len(text) <= 60 else text[:57] + "..."
    reason = getattr(answer, "finish_reason", "")
    hint = " (the answer was cut short: raise -n or -t)" if reason in ("length", "timeout", "cancelled") else ""
    raise FormatError(
        f"the answer is not valid JSON{hint}: {error.msg} at line {error.lineno} column "
        f"{error.colno}; got {shown!r}. The raw text is in llm_magic.last_answer()"
    )
