"""llm_magic.ipython.magics under fuzzing: random ``%%ask``, ``%ask`` and ``%llm`` lines (hypothesis)
raise nothing but ``UsageError``, and the magics still work afterwards."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from conftest import run

hypothesis = pytest.importorskip("hypothesis")


def test_fuzzed_magic_lines_raise_nothing_but_usage_error(ip, tiny_model):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ip.run_line_magic("config", f"AskMagics.models = {{'t': {{'path': {tiny_model!r}, 'n_ctx': 64}}}}")
    ip.run_line_magic("config", "AskMagics.model = 't'")
    ip.run_line_magic("config", "AskMagics.timeout = 5")
    flags = [
        "-m",
        "-t",
        "-n",
        "-f",
        "-o",
        "-c",
        "--chat",
        "--system",
        "--temperature",
        "--top-p",
        "--top-k",
        "--repeat-penalty",
        "--seed",
        "--stop",
        "--raw",
        "--no-interpolate",
        "--grammar",
        "--",
        "-x",
        "--bogus",
    ]
    # printable text: IPython itself splits a cell at control characters such as \x1e (str.splitlines)
    printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=8)
    values = st.one_of(
        st.sampled_from(
            [
                "t",
                "0",
                "-1",
                "1e9",
                "nan",
                "json",
                "code",
                "yaml",
                "x y",
                "'",
                '"',
                "{a}",
                "/no/file",
                'root ::= "a"',
                "3",
            ]
        ),
        printable,
    )
    token = st.one_of(st.sampled_from(flags), values)
    line = st.lists(token, max_size=7).map(" ".join)
    llm_words = st.sampled_from(
        [
            "status",
            "load",
            "unload",
            "alias",
            "aliases",
            "history",
            "reset",
            "help",
            "explain",
            "bogus",
            "--all",
            "--wait",
            "x",
            "t",
            "'",
        ]
    )
    llm_line = st.lists(st.one_of(llm_words, values), min_size=1, max_size=5).map(" ".join)
    outcomes = {"ok": 0, "usage": 0}

    def check(cell: str) -> None:
        try:
            run(ip, cell)
        except UsageError:
            outcomes["usage"] += 1
        except BaseException as e:  # noqa: BLE001 - anything else is the bug this test looks for
            pytest.fail(f"{cell!r} raised {e!r}")
        else:
            outcomes["ok"] += 1

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(line, st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20))
    def fuzz_ask(options, body):
        check(f"%%ask {options}\n{body}")

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(line)
    def fuzz_line_ask(options):
        check(f"%ask {options}")

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(llm_line)
    def fuzz_llm(rest):
        words = rest.split()
        if words and words[0] == "unload" and "--all" in words:
            return
        check(f"%llm {rest}")

    fuzz_ask()
    fuzz_line_ask()
    fuzz_llm()
    assert outcomes["ok"] > 0 and outcomes["usage"] > 0  # both kinds of line were really tried
    run(ip, "%%ask -n 2 -o ok\nstill alive")
    assert ip.user_ns["ok"].n_tokens == 2
