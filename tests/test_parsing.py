"""llm_magic.ipython.parsing: %ask's options and verbatim prompt, the ? transformer, grammars."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic.ipython.magics import AskMagics
from llm_magic.ipython.parsing import (
    ask_line_transformer,
    parse_ask_line,
    read_grammar,
    split_options,
    split_words,
)

from conftest import evaluated_prompt, run, run_error

VALUES, FLAGS = {"-m", "-t", "--model", "-n"}, {"--raw"}


def test_split_options_keeps_prompt_verbatim():
    assert split_options("-m x -t 3 What's up?", VALUES, FLAGS) == ("-m x -t 3 ", "What's up?")
    assert split_options('--raw say "hi" {a: 1}', VALUES, FLAGS) == ("--raw ", 'say "hi" {a: 1}')
    assert split_options("-m 'my model.gguf' hi", VALUES, FLAGS) == ("-m 'my model.gguf' ", "hi")
    assert split_options("-t 3 -- -m is text", VALUES, FLAGS) == ("-t 3 ", "-m is text")
    assert split_options("-n 5", VALUES, FLAGS) == ("-n 5", "")
    assert split_options("--model=x   two  spaces  ", VALUES, FLAGS)[1] == "two  spaces"  # inner spaces kept
    assert split_options("-n 5 -3 degrees", VALUES, FLAGS) == ("-n 5 ", "-3 degrees")  # a number is text
    assert split_options("it's $x and {1+1}", VALUES, FLAGS) == ("", "it's $x and {1+1}")
    with pytest.raises(UsageError, match="unknown option --nope"):
        split_options("--nope x", VALUES, FLAGS)


def test_parse_ask_line_removes_quotes_from_options_only():
    parser = AskMagics.ask.parser
    args, prompt = parse_ask_line(parser, '--system "Be brief." -n 3 -o a Say "hi", don\'t shout')
    assert (args.system, args.max_tokens, args.output) == ("Be brief.", 3, "a")
    assert prompt == 'Say "hi", don\'t shout'
    args, prompt = parse_ask_line(parser, "--stop x --stop 'y z' -c $x {1+1}")
    assert args.stop == ["x", "y z"] and args.conversation == "$x" and prompt == "{1+1}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-o 1x hi", "-o needs a variable name, got '1x'"),
        ("-o a.b hi", "-o needs a variable name"),
        ("-c x --chat hi", "use either -c NAME or --chat"),
        ("-t abc hi", "invalid float value"),
        ("--bogus hi", "unknown option --bogus"),
    ],
)
def test_parse_ask_line_errors_are_usage_errors(line, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        parse_ask_line(AskMagics.ask.parser, line)


def test_chat_and_c_together_is_a_usage_error_in_the_shell(ip):
    error, out = run_error(ip, "%%ask -c x --chat\nhi")
    assert isinstance(error, UsageError) and "use either -c NAME or --chat" in str(error)
    assert "Traceback" not in out and llm_magic.last_answer() is None  # nothing was asked


def test_split_words_is_shell_like_and_an_unbalanced_quote_is_a_usage_error():
    assert split_words('alias "my model" /p --n-ctx 5') == ["alias", "my model", "/p", "--n-ctx", "5"]
    with pytest.raises(UsageError, match="%llm alias: No closing quotation"):
        split_words('x "unclosed', "%llm alias")


# ---- the ? transformer ------------------------------------------------------------------------------


def test_ask_line_transformer():
    call = "get_ipython().run_line_magic('ask', {!r})\n"
    assert ask_line_transformer(["%ask What is X?\n"]) == [call.format("What is X?")]
    assert ask_line_transformer(["%ask -n 3 it's {1+1} and $x?"]) == [call.format("-n 3 it's {1+1} and $x?")]
    assert ask_line_transformer(["x = 1\n", "  %ask why?\n"]) == ["x = 1\n", "  " + call.format("why?")]
    for untouched in (
        ["%ask?\n"],
        ["%ask\n"],
        ["%asking x?\n"],
        ["%%ask -n 3\n", "%ask in a cell body?\n"],
        ["print('%ask x?')\n"],
        [],
    ):
        assert ask_line_transformer(list(untouched)) == untouched


def test_line_ask_with_question_mark_is_not_a_help_request(ip):
    _, out = run(ip, "%ask -n 4 -o q What is the capital of France?")
    q = ip.user_ns["q"]
    assert q.n_tokens == 4 and llm_magic.last_answer() is q
    assert "Docstring" not in out and "Object `France` not found" not in out  # no help shown
    assert evaluated_prompt(q) == "Q: What is the capital of France?\nA:"  # the ? went to the model


def test_help_requests_still_work(ip):
    _, out = run(ip, "%ask?")
    assert "--max-tokens" in out
    _, out = run(ip, "%llm?")
    assert "%llm help lists the subcommands" in out


# ---- --grammar ----------------------------------------------------------------------------------


def test_read_grammar(tmp_path, monkeypatch):
    assert read_grammar('root ::= "x"') == 'root ::= "x"'
    path = tmp_path / "g.gbnf"
    path.write_text('root ::= "yes" | "no"\n')
    assert read_grammar(str(path)) == 'root ::= "yes" | "no"\n'
    monkeypatch.setenv("HOME", str(tmp_path))
    assert read_grammar("~/g.gbnf") == 'root ::= "yes" | "no"\n'
    with pytest.raises(UsageError, match=r"--grammar: no such file '/no/file\.gbnf'"):
        read_grammar("/no/file.gbnf")


def test_grammar_flag_constrains_the_answer(ip, tmp_path):
    grammar = tmp_path / "yes.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    run(ip, f"%%ask --grammar {grammar} -n 20 -o a\nyes or no?")
    assert ip.user_ns["a"].text in ("yes", "no") and ip.user_ns["a"].finish_reason == "stop"
    run(ip, "%%ask --grammar 'root ::= \"maybe\"' -n 20 -o b\nyes or no?")
    assert ip.user_ns["b"].text == "maybe"


def test_grammar_flag_errors(ip):
    error, _ = run_error(ip, "%%ask --grammar /no/file.gbnf\nhi")
    assert isinstance(error, UsageError) and "no such file" in str(error)
    error, out = run_error(ip, "%%ask --grammar 'root ::= ('\nhi")
    assert isinstance(error, UsageError) and "invalid GBNF grammar" in str(error) and "Traceback" not in out
    run(ip, "%%ask -n 2 -o ok\nthe model still works")
    assert ip.user_ns["ok"].n_tokens == 2
