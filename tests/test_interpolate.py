"""llm_magic.ipython.interpolate: {name}, {In[n]}/{Out[n]}/{Err[n]} in prompts; every other brace kept."""

from __future__ import annotations

import llm_magic
from llm_magic.ipython.interpolate import interpolate

from conftest import evaluated_prompt, run, run_error


def test_interpolation_rules():
    ns = {"x": 42, "name": "Ada", "In": ["", "a = 1", "b = a + 1"], "Out": {2: 3}}
    errors = {3: "Traceback ...\nZeroDivisionError: division by zero"}
    warnings = []
    text = (
        'Hi {name}, x={x}. d = {"a": 1}; s = {x for x in y}; f"{v}"; f"{x}"; {{x}}; {undefined_name}; '
        '{x.real} {x[0]} {In[1]} / {Out[2]} / {Err[3]} / {In[99]} {__import__("os")}'
    )
    got = interpolate(text, user_ns=ns, errors=errors, warn=warnings.append)
    assert got.startswith("Hi Ada, x=42. ")
    for kept in (
        '{"a": 1}',
        "{x for x in y}",
        'f"{v}"',
        'f"{x}"',
        "{{x}}",
        "{undefined_name}",
        "{x.real}",
        "{x[0]}",
        "{In[99]}",
        '{__import__("os")}',
    ):
        assert kept in got
    assert "a = 1 / 3 / Traceback ...\nZeroDivisionError: division by zero /" in got
    assert len(warnings) == 1 and "{undefined_name}" in warnings[0] and "{In[99]}" in warnings[0]
    assert "--no-interpolate" in warnings[0]


def test_values_negative_references_and_no_warning_when_all_found():
    ns = {"s": "text", "n": None, "items": [1, 2], "Out": {3: "three", 7: "seven"}}
    errors = {2: "E2", 5: "E5"}
    warnings = []
    got = interpolate(
        "{s} {n} {items} {Out[-1]} {Out[-2]} {Err[-1]} {Err[-2]}", user_ns=ns, errors=errors, warn=warnings.append
    )
    assert got == "text None [1, 2] seven three E5 E2"
    assert warnings == []
    # a reference past the start, or {In[0]} (never a cell), is kept as written
    assert (
        interpolate("{Out[-3]} {Err[-9]} {In[0]}", user_ns={"In": ["", "a"], "Out": {1: 1}}, errors={})
        == "{Out[-3]} {Err[-9]} {In[0]}"
    )


def test_f_strings_keep_their_braces_but_only_on_their_own_line():
    ns = {"x": "X", "v": "V"}
    got = interpolate('print(f"{x} and {v}")\nprint(fr\'{x}\')\n{x} then F"""{v}"""', user_ns=ns)
    assert got == 'print(f"{x} and {v}")\nprint(fr\'{x}\')\nX then F"""{v}"""'
    assert interpolate('f"{x}" {x}', user_ns=ns) == 'f"{x}" X'  # the f-string closed before {x}
    assert interpolate("elif {x}", user_ns=ns) == "elif X"  # an identifier ending in f is not an f-string


def test_rf_strings_keep_their_braces():
    assert interpolate("print(rf'{x}')", user_ns={"x": "X"}) == "print(rf'{x}')"


def test_interpolation_is_not_evaluation():
    calls = []

    class Loud:
        def __str__(self):
            calls.append("str")
            return "loud"

        def __getattr__(self, name):
            calls.append(name)
            raise AttributeError(name)

    got = interpolate("{obj.secret} {obj[0]} {obj}", user_ns={"obj": Loud()})
    assert got == "{obj.secret} {obj[0]} loud" and calls == ["str"]


def test_braces_in_code_are_sent_unchanged(ip, caplog):
    cell = '%%ask --raw -n 2 -o a\nfix this: d = {"a": 1}\ns = {x for x in y}\nprint(f"{v}")\n{undefined_name}'
    run(ip, cell)
    assert (
        evaluated_prompt(ip.user_ns["a"])
        == 'fix this: d = {"a": 1}\ns = {x for x in y}\nprint(f"{v}")\n{undefined_name}\n'
    )
    assert "{undefined_name} not defined" in caplog.text


def test_variables_and_cell_references_are_filled_in(ip):
    run(ip, "city = 'Lisbon'", store_history=True)
    run(ip, "21 * 2", store_history=True)
    run_error(ip, "1 / 0", store_history=True)
    n = ip.execution_count
    cell = (
        f"%%ask --raw -n 2 -o a\nCity: {{city}}. Code: {{In[{n - 2}]}}. Result: {{Out[{n - 2}]}}. "
        f"Error: {{Err[{n - 1}]}}"
    )
    run(ip, cell, store_history=True)
    text = evaluated_prompt(ip.user_ns["a"])
    assert text.startswith("City: Lisbon. Code: 21 * 2. Result: 42. Error: Traceback (most recent call last):")
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "interactiveshell.py" not in text  # IPython's own frames are left out


def test_no_interpolate(ip):
    ip.user_ns["city"] = "Lisbon"
    run(ip, "%%ask --raw --no-interpolate -n 2 -o a\nCity: {city}")
    assert evaluated_prompt(ip.user_ns["a"]) == "City: {city}\n"
    run(ip, "%%ask --raw -n 2 -o b\nCity: {city}")
    assert evaluated_prompt(ip.user_ns["b"]) == "City: Lisbon\n"
    assert llm_magic.last_answer() is ip.user_ns["b"]
