"""llm_magic.ipython.formats: %%ask -f code (the next cell, never run) and -f json (a parsed object)."""

from __future__ import annotations

import builtins
import json

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic.answer import Answer
from llm_magic.ipython.formats import (
    FORMATS,
    FormatError,
    code_for_next_cell,
    first_code_block,
    is_python_code,
    parse_json_answer,
)

from conftest import run, run_error


def test_formats():
    assert FORMATS == ("markdown", "text", "code", "json")


def test_first_code_block():
    assert first_code_block("Sure:\n```python\nx = 1\n```\n```\ny = 2\n```") == "x = 1"
    assert first_code_block("~~~\nz = 3\n~~~") == "z = 3"
    assert first_code_block("  ```py title\na\n\nb\n  ```") == "a\n\nb"
    assert first_code_block("```\nnot closed\nstill code") == "not closed\nstill code"  # cut short: to the end
    assert first_code_block("no fence, `inline` only") is None


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("Sure:\n```python\nx = 1\n```", "x = 1"),
        ("x = 1\nprint(x)", "x = 1\nprint(x)"),  # a bare code answer, without fences
        ("\n    import os\n    os.getcwd()\n", "import os\nos.getcwd()"),  # indented as a whole
        ("[1, 2, 3]", "[1, 2, 3]"),
        ('re.sub("\\d", "", s)', 're.sub("\\d", "", s)'),  # an invalid escape is still code
        ("```\n```\nx = 2", None),  # an empty block is no code block (and the rest is not Python)
        ("Use a for loop over the list and add each item.", None),  # prose
        ("Paris", None),  # parses as Python, but it is a word
        ("yes and no", None),
        ("apples, pears", None),
        ("not sure", None),
        ("", None),
        ("  \n\t", None),
    ],
)
def test_code_for_next_cell(answer, code):
    assert code_for_next_cell(answer) == code
    assert code_for_next_cell(Answer(answer)) == code


def test_is_python_code():
    assert is_python_code("def f():\n    return 1") and is_python_code("f(x)") and is_python_code("a[0]")
    assert not is_python_code("Paris") and not is_python_code("x +") and not is_python_code("a\x00b")


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


def grammar_file(tmp_path, text: str):
    """A GBNF grammar whose only sentence is ``text``: the tiny model answers exactly that."""
    path = tmp_path / "answer.gbnf"
    path.write_text("root ::= " + json.dumps(text) + "\n")
    return path


def test_format_code_without_a_code_block_inserts_nothing_and_says_so(ip, tmp_path):
    grammar = grammar_file(tmp_path, "Use a for loop over the list, and add up the items.")
    ip.rl_next_input = None
    _, out = run(ip, f"%%ask -f code --grammar {grammar} -n 300 -o c\nwrite code")
    assert ip.rl_next_input is None  # no new cell with prose in it
    assert out.endswith("[no code block in the answer]\n") and out.count("\n[") == 1  # one line, under the answer
    c = ip.user_ns["c"]
    assert c.text == "Use a for loop over the list, and add up the items." and c.value is None


def test_format_code_takes_a_bare_code_answer(ip, tmp_path):
    grammar = grammar_file(tmp_path, "total = 0\nfor x in items:\n    total += x")
    ip.rl_next_input = None
    _, out = run(ip, f"%%ask -f code --grammar {grammar} -n 300 -o c\nwrite code")
    assert ip.rl_next_input == "total = 0\nfor x in items:\n    total += x" == ip.user_ns["c"].value
    assert "no code block" not in out and "items" not in ip.user_ns  # never run


def test_format_code_with_an_empty_answer_inserts_nothing(ip, tmp_path):
    grammar = grammar_file(tmp_path, "\n\n")
    ip.rl_next_input = None
    _, out = run(ip, f"%%ask -f code --grammar {grammar} -n 300 -o c\nwrite code")
    assert ip.rl_next_input is None and ip.user_ns["c"].text.strip() == ""
    assert out.endswith("\n[empty answer]\n[no code block in the answer]\n")


def test_format_code_note_in_a_notebook(ip, tmp_path, monkeypatch):
    from IPython.utils.capture import capture_output

    grammar = grammar_file(tmp_path, "No code needed: just ask.")
    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    with capture_output() as captured:
        ip.run_cell(f"%%ask -f code --grammar {grammar} -n 300\nwrite code")
    final = captured.outputs[-1].data
    assert final == {"text/plain": "No code needed: just ask.\n\n[no code block in the answer]"}


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


@pytest.mark.parametrize("prose", ["Answer: 42", "Capital: Paris", "Result: True", "Paris (France)"])
def test_prose_that_happens_to_parse_is_not_code(prose):
    assert not is_python_code(prose) and code_for_next_cell(prose) is None


@pytest.mark.parametrize("code", ["x: int = 5", 'print("hi")', "df.head()", "import os", "def f():\n    return 1"])
def test_bare_code_is_code(code):
    assert is_python_code(code) and code_for_next_cell(code) == code


def test_the_first_block_with_code_in_it_is_taken():
    assert code_for_next_cell("```\n\n```\nthen:\n```python\nx = 1\n```") == "x = 1"
