"""llm_magic.ipython.formats: %%ask -f code (the next cell, never run) and -f json (a parsed object)."""

from __future__ import annotations

import builtins
import json

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic.answer import Answer
from llm_magic.ipython.formats import FORMATS, FormatError, first_code_block, parse_json_answer

from conftest import run, run_error


def test_formats():
    assert FORMATS == ("markdown", "text", "code", "json")


def test_first_code_block():
    assert first_code_block("Sure:\n```python\nx = 1\n```\n```\ny = 2\n```") == "x = 1"
    assert first_code_block("~~~\nz = 3\n~~~") == "z = 3"
    assert first_code_block("  ```py title\na\n\nb\n  ```") == "a\n\nb"
    assert first_code_block("```\nnot closed\nstill code") == "not closed\nstill code"  # cut short: to the end
    assert first_code_block("no fence, `inline` only") is None


def test_parse_json_answer():
    assert parse_json_answer(' {"a": [1, 2]} ') == {"a": [1, 2]}
    assert parse_json_answer('Here:\n```json\n[1, "x"]\n```') == [1, "x"]
    answer = Answer('{"ok": true}')
    assert parse_json_answer(answer) == {"ok": True} and answer.value == {"ok": True}
    with pytest.raises(FormatError, match=r"not valid JSON: Expecting value at line 1 column 1; got 'nope'") as e:
        parse_json_answer("nope")
    assert isinstance(e.value, ValueError) and e.value.user_error
    cut = Answer('{"a": ', finish_reason="length")
    with pytest.raises(FormatError, match=r"cut short: raise -n or -t.*llm_magic.last_answer\(\)"):
        parse_json_answer(cut)


def test_format_code_puts_the_first_fenced_block_in_the_next_cell_and_never_runs_it(ip, tmp_path):
    grammar = tmp_path / "code.gbnf"
    grammar.write_text(
        r'root ::= "Sure.\n```python\nimport builtins\nbuiltins.llm_magic_ran = 1\n```\n'
        r'```python\nsecond = 2\n```\nDone."' + "\n"
    )
    ip.rl_next_input = None
    run(ip, f"%%ask -f code --grammar {grammar} -n 300 -o c\nwrite code")
    assert ip.rl_next_input == "import builtins\nbuiltins.llm_magic_ran = 1"  # the first block only
    assert not hasattr(builtins, "llm_magic_ran")  # never executed
    assert "second" not in ip.user_ns
    c = ip.user_ns["c"]
    assert isinstance(c, Answer) and c.finish_reason == "stop" and c.text.endswith("Done.")


def test_format_code_without_a_fence_uses_the_whole_answer(ip):
    ip.rl_next_input = None
    run(ip, "%%ask -f code -n 5 -o c\nwrite code")
    assert ip.rl_next_input == ip.user_ns["c"].text.strip() != ""


def test_format_json_valid(ip):
    run(ip, '%config AskMagics.json_grammar = \'root ::= "{\\\\"capital\\\\": \\\\"Paris\\\\", \\\\"n\\\\": [1, 2]}"\'')
    run(ip, "%%ask -f json -n 300 -o data\nCapital of France as JSON")
    assert ip.user_ns["data"] == {"capital": "Paris", "n": [1, 2]}  # -o stores the object
    assert llm_magic.last_answer().value == {"capital": "Paris", "n": [1, 2]}
    assert llm_magic.last_answer().text == '{"capital": "Paris", "n": [1, 2]}'


def test_format_json_invalid_is_a_clear_error_and_keeps_the_text(ip):
    run(ip, '%config AskMagics.json_grammar = \'root ::= "{\\\\"capital\\\\": "\'')
    error, out = run_error(ip, "%%ask -f json -n 40 -o data\nCapital of France as JSON")
    assert isinstance(error, UsageError) and "Traceback" not in out
    assert "not valid JSON" in str(error) and "last_answer()" in str(error)
    assert "data" not in ip.user_ns
    assert llm_magic.last_answer() == '{"capital": '


def test_format_json_uses_the_json_grammar_by_default(ip):
    run(ip, "%%ask -f json -n 200 --temperature 0 -o data\nGive me JSON")
    data = ip.user_ns["data"]
    assert isinstance(data, (dict, list))
    assert json.loads(llm_magic.last_answer().text) == data  # the whole answer is that JSON
