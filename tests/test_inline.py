"""llm_magic.inline and inline_prompt: the requests of JupyterLab's inline completion comm,
answered on a real tiny model (no kernel here: tests/integration/test_inline_kernel.py has one)."""

from __future__ import annotations

import threading
import time

import pytest

import llm_magic
from llm_magic import inline, runtime, settings
from llm_magic.inline import BadRequest, InlineServer, Request, parse
from llm_magic.inline_prompt import LineEnd, fim_markers, prompt_tokens

from conftest import run, run_error
from tiny_gguf import write_tiny_model

QWEN_FIM = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
STARCODER_FIM = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
LONG = {"action": "complete", "prefix": "Once upon a time", "max_tokens": 256, "mode": "none"}  # runs a while
CODE = "import numpy as np\n\ndef mean(xs):\n    return np.mean(xs)\n\nprint(mean([1, 2, 3]))\n"


@pytest.fixture(scope="module")
def fim_model(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("fim") / "fim.gguf", special_tokens=QWEN_FIM))


@pytest.fixture(scope="module")
def starcoder_model(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("fim") / "starcoder.gguf", user_tokens=STARCODER_FIM))


def loaded(path: str):
    """The tiny model at ``path``, loaded, as the completion model."""
    settings.current().completion_model = path
    entry = llm_magic.preload(path)[0]
    entry.future.result(timeout=60)
    return entry.model


def run_one(request: Request) -> tuple[inline.Outcome, list[str]]:
    pieces: list[str] = []
    return inline.complete(inline._Job(request), pieces.append), pieces


class Recorder:
    """Stands in for ``comm.send``: the replies, in order, with a done event per id."""

    def __init__(self, delay: float = 0.0):
        self.replies: list[dict] = []
        self.delay = delay
        self.lock = threading.Lock()
        self.done: dict[object, threading.Event] = {}

    def send(self, data: dict) -> None:
        if self.delay and not data["done"]:
            time.sleep(self.delay)
        with self.lock:
            self.replies.append(data)
            self.done.setdefault(data["id"], threading.Event())
        if data["done"]:
            self.done[data["id"]].set()

    def wait(self, rid: object, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while rid not in self.done and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.done[rid].wait(max(0.0, deadline - time.monotonic())), f"no done for {rid}"
        return self.of(rid)

    def wait_text(self, rid: object, timeout: float = 30) -> None:
        """Until the request's first reply (it is running)."""
        deadline = time.monotonic() + timeout
        while not self.of(rid):
            assert time.monotonic() < deadline, f"no reply for {rid}"
            time.sleep(0.005)

    def of(self, rid: object) -> list[dict]:
        with self.lock:
            return [r for r in self.replies if r["id"] == rid]


# ---- parsing ------------------------------------------------------------------------------------


def test_parse_a_complete_request_and_its_defaults():
    action, rid, req = parse({"action": "complete", "id": 3, "prefix": "x = ", "suffix": "\n", "max_tokens": 9})
    assert (action, rid) == ("complete", 3)
    assert req == Request(3, "x = ", "\n", 9, ("\n",))
    _, _, req = parse({"action": "complete", "id": 4, "prefix": "a", "mode": "block", "stop": ["#"]})
    assert req is not None and req.stops == ("\n\n", "#") and req.max_tokens == 32 and req.suffix == ""
    assert parse({"action": "cancel", "id": 3}) == ("cancel", 3, None)


def test_huge_requests_are_trimmed_to_the_budget():
    _, _, req = parse({"action": "complete", "id": 1, "prefix": "p" * 10**6 + "END", "suffix": "START" + "s" * 10**6})
    assert req is not None
    assert inline.PREFIX_CHARS - inline.TRIM_STEP_CHARS < len(req.prefix) <= inline.PREFIX_CHARS
    assert req.prefix.endswith("END")
    _, _, longer = parse({"action": "complete", "id": 2, "prefix": "p" * 10**6 + "END + 1", "suffix": ""})
    assert longer is not None and longer.prefix == req.prefix + " + 1"  # a keystroke does not move the start
    assert len(req.suffix) == inline.SUFFIX_CHARS and req.suffix.startswith("START")
    _, _, req = parse({"action": "complete", "id": 1, "prefix": "x", "max_tokens": 10**9})
    assert req is not None and req.max_tokens == inline.MAX_TOKENS


@pytest.mark.parametrize(
    "data",
    [
        None,
        "complete",
        [1, 2],
        {},
        {"action": "complete"},
        {"action": "complete", "id": "1", "prefix": "x"},
        {"action": "complete", "id": True, "prefix": "x"},
        {"action": "complete", "id": 1, "prefix": 3},
        {"action": "complete", "id": 1, "prefix": "x", "max_tokens": 0},
        {"action": "complete", "id": 1, "prefix": "x", "max_tokens": 1.5},
        {"action": "complete", "id": 1, "prefix": "x", "mode": "paragraph"},
        {"action": "complete", "id": 1, "prefix": "x", "stop": "\n"},
        {"action": "complete", "id": 1, "prefix": "x", "stop": [""]},
        {"action": "explode", "id": 1},
    ],
)
def test_malformed_messages_are_bad_requests(data):
    with pytest.raises(BadRequest):
        parse(data)


# ---- the prompt and the end of a completion -------------------------------------------------------


def test_line_end_cuts_at_the_first_newline_after_text():
    end = LineEnd(["\n"])
    assert [end.feed(p) for p in ["\n", "    ret", "urn x", "\nnext"]] == ["\n", "    ret", "urn x", ""]
    assert end.hit and end.rest() == ""
    end = LineEnd(["\n\n"])
    assert end.feed("a\n") == "a" and end.feed("b\n") == "\nb" and end.feed("\nc") == "" and end.hit
    end = LineEnd([])
    assert end.feed("a\nb") == "a\nb" and not end.hit and end.rest() == ""
    end = LineEnd(["##"])
    assert end.feed("x#") == "x" and end.rest() == "#"


def test_a_fim_prompt_from_the_vocabulary(fim_model, starcoder_model, tiny_model):
    model = loaded(fim_model)
    llm = model.llm
    pre, suf, mid = fim_markers(llm)
    assert [llm.detokenize([t], special=True) for t in (pre, suf, mid)] == [m.encode() for m in QWEN_FIM]
    tokens, shape = prompt_tokens(llm, True, model.n_ctx, "def f(x):\n    return ", "\nprint(f(1))", 16)
    assert shape == "fim" and tokens[0] == llm.token_bos() and tokens[1] == pre and tokens[-1] == mid
    assert tokens.count(suf) == 1 and tokens.index(suf) > 2 and tokens.index(suf) < len(tokens) - 2
    # code that spells a marker stays text: the marker token appears once, where we put it
    tokens, _ = prompt_tokens(llm, False, model.n_ctx, "s = '<|fim_middle|>'", "", 16)
    assert tokens.count(mid) == 1 and tokens[-1] == mid
    star = loaded(starcoder_model)
    markers = fim_markers(star.llm)
    assert markers is not None
    assert [star.llm.detokenize([t], special=True) for t in markers] == [m.encode() for m in STARCODER_FIM]
    plain = loaded(tiny_model)
    assert fim_markers(plain.llm) is None
    tokens, shape = prompt_tokens(plain.llm, True, plain.n_ctx, "x = 1", "ignored", 16)
    assert shape == "continue" and tokens == [plain.llm.token_bos(), *plain.llm.tokenize(b"x = 1", add_bos=False)]


def test_a_prompt_larger_than_the_context_keeps_the_end_of_the_prefix(fim_model):
    model = loaded(fim_model)
    prefix = "alpha beta gamma " * 2000
    tokens, shape = prompt_tokens(model.llm, True, model.n_ctx, prefix + "omega", "tail " * 2000, 64)
    assert shape == "fim" and len(tokens) + 64 <= model.n_ctx
    pre, suf, mid = fim_markers(model.llm)
    before_suffix = tokens[: tokens.index(suf)]
    assert model.llm.detokenize(before_suffix[-8:]).decode().strip().endswith("omega")
    outcome, pieces = run_one(Request(1, prefix[-inline.PREFIX_CHARS :], "", 8, ()))
    assert outcome.reason == "length" and outcome.n_tokens == 8 and pieces


def test_a_keystroke_on_a_prefix_over_budget_still_reuses_the_cache(tiny_model):
    """Over the budget the prefix loses its start in whole steps, so the next keystroke's prompt
    still begins as the cached one did."""
    loaded(tiny_model)
    big = CODE * 500  # over the character budget, and far over the model's 2048-token window
    requests = [parse({"action": "complete", "id": i, "prefix": big + tail}) for i, tail in enumerate(["x", "x ="])]
    first, _ = run_one(requests[0][2])
    second, _ = run_one(requests[1][2])
    assert first.n_prompt_evaluated == first.n_prompt_tokens > 1000
    assert second.n_prompt_evaluated <= 3, second


# ---- completions on the model -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["fim", "continue"])
def test_a_longer_prefix_evaluates_only_the_new_tokens(which, fim_model, tiny_model):
    model = loaded(fim_model if which == "fim" else tiny_model)
    suffix = "\nprint('end')\n"
    first, pieces = run_one(Request(1, CODE * 5, suffix, 8, ()))
    assert first.reason == "length" and first.shape == which and first.n_tokens == 8
    assert first.n_prompt_evaluated == first.n_prompt_tokens > 100 and "".join(pieces) == first.text
    second, _ = run_one(Request(2, CODE * 5 + "x = mean", suffix, 8, ()))
    new = second.n_prompt_tokens - first.n_prompt_tokens
    assert second.shape == which and new > 0
    # evaluated: the new tokens (and the one before them, if the keystroke merged into it); for a
    # FIM prompt also what follows the prefix (suffix marker, suffix, middle marker)
    after_prefix = len(model.llm.tokenize(suffix.encode(), add_bos=False)) + 2 if which == "fim" else 0
    assert new <= second.n_prompt_evaluated <= new + 1 + after_prefix, (first, second)


def test_a_completion_stops_at_the_end_of_the_line(tiny_model):
    loaded(tiny_model)
    outcome, pieces = run_one(Request(1, "Once upon", "", 200, ("e",)))
    assert outcome.reason == "stop" and "e" not in "".join(pieces).strip()[:1]
    assert "".join(pieces) == outcome.text and outcome.n_tokens < 200


def test_quiet_outcomes_when_off_not_loaded_loading_failed_or_missing(tiny_model, corrupt_files):
    settings.current().inline_completion = False
    assert run_one(Request(1, "x", "", 4))[0].reason == "off"
    settings.current().inline_completion = True
    settings.current().completion_model = tiny_model
    outcome, pieces = run_one(Request(2, "x", "", 4))
    assert outcome.reason == "not loaded" and pieces == []
    assert runtime.get().cache.entries() == []  # typing never loads a model (an explicit unload stays)
    llm_magic.preload(tiny_model)[0].future.result(timeout=60)
    assert run_one(Request(3, "x", "", 4))[0].reason == "length"
    bad = str(next(iter(corrupt_files.values())))
    settings.current().completion_model = bad
    entry = llm_magic.preload(bad)[0]
    assert run_one(Request(4, "x", "", 4))[0].reason in ("loading", "failed")
    try:
        entry.future.result(timeout=60)
    except Exception:  # noqa: BLE001 - the corrupt file fails to load: that is the point
        pass
    outcome, pieces = run_one(Request(5, "x", "", 4))
    assert outcome.reason == "failed" and pieces == []
    settings.current().completion_model = "/nonexistent/model.gguf"
    outcome, _ = run_one(Request(6, "x", "", 4))
    assert outcome.reason.startswith("error: ModelNotFound")


def test_an_ask_between_two_keystrokes_keeps_the_notebook_prefix(tiny_model):
    """The completion's KV state is kept as a conversation's is: the ask saves it, the next
    keystroke restores it instead of reading the whole prefix again."""
    loaded(tiny_model)
    first, _ = run_one(Request(1, CODE * 5, "", 4, ()))
    assert first.n_prompt_evaluated == first.n_prompt_tokens > 100
    llm_magic.ask("Tell me something else entirely.", model=tiny_model, max_tokens=3)  # the cache now holds this
    second, _ = run_one(Request(2, CODE * 5 + "x = mean", "", 4, ()))
    assert second.n_prompt_evaluated <= second.n_prompt_tokens - first.n_prompt_tokens + 2, second
    settings.current().kv_cache_budget = "0"  # no budget: nothing is kept, the prefix is read again
    llm_magic.ask("Tell me something else entirely.", model=tiny_model, max_tokens=3)
    third, _ = run_one(Request(3, CODE * 5 + "x = mean(", "", 4, ()))
    assert third.n_prompt_evaluated >= third.n_prompt_tokens - 1  # all but the BOS the ask shares


def test_a_completion_gives_way_to_an_ask_within_a_token(tiny_model):
    loaded(tiny_model)
    started, texts = threading.Event(), []

    def emit(text: str) -> None:
        texts.append(text)
        started.set()
        time.sleep(0.01)  # a slow consumer: the completion would take ~2.5 s

    job = inline._Job(Request(1, "Once upon a time", "", 256, ()))
    result: list[inline.Outcome] = []
    worker = threading.Thread(target=lambda: result.append(inline.complete(job, emit)))
    worker.start()
    assert started.wait(30)
    t0 = time.monotonic()
    answer = llm_magic.ask("hello", model=tiny_model, max_tokens=5)
    waited = time.monotonic() - t0
    worker.join(30)
    assert result[0].reason == "yielded" and 0 < result[0].n_tokens < 256
    assert answer.finish_reason == "length" and answer.n_tokens == 5
    assert waited < 1.0  # one token of the completion, not the rest of it


# ---- the server: what the comm sees ------------------------------------------------------------------


def test_server_streams_pieces_then_one_done(tiny_model):
    loaded(tiny_model)
    rec = Recorder()
    server = InlineServer(rec.send)
    server.handle({"action": "complete", "id": 7, "prefix": "Once upon a time", "max_tokens": 6, "mode": "none"})
    replies = rec.wait(7)
    assert [r["done"] for r in replies] == [False] * (len(replies) - 1) + [True]
    assert replies[-1]["text"] == "" and len(replies) > 1
    assert "".join(r["text"] for r in replies) == server.outcomes[-1].text
    assert server.outcomes[-1].reason == "length"


def test_server_answers_bad_messages_with_a_quiet_done(tiny_model, caplog):
    loaded(tiny_model)
    rec = Recorder()
    server = InlineServer(rec.send)
    with caplog.at_level("DEBUG", logger="llm_magic.inline"):
        for data in (None, [], {"action": "explode", "id": 5}, {"action": "complete", "id": 6, "prefix": 1}):
            server.handle(data)
    assert rec.replies == [
        {"id": None, "text": "", "done": True},
        {"id": None, "text": "", "done": True},
        {"id": 5, "text": "", "done": True},
        {"id": 6, "text": "", "done": True},
    ]
    assert sum("ignoring a bad message" in r.getMessage() for r in caplog.records) == 4


def test_a_newer_request_and_a_cancel_stop_the_running_one(tiny_model):
    loaded(tiny_model)
    rec = Recorder(delay=0.01)
    server = InlineServer(rec.send)
    server.handle({**LONG, "id": 1})
    rec.wait_text(1)
    server.handle({**LONG, "id": 2, "max_tokens": 3})
    first, second = rec.wait(1), rec.wait(2)
    assert first[-1]["done"] and len(first) < 50  # stopped within a token or so, not 256
    assert server.outcomes[0].reason == "cancelled"
    assert second[-1]["done"] and len(second) >= 2 and server.outcomes[1].reason == "length"
    server.handle({**LONG, "id": 3})
    rec.wait_text(3)
    server.handle({"action": "cancel", "id": 3})
    assert len(rec.wait(3)) < 50 and server.outcomes[-1].reason == "cancelled"


def test_stale_requests_are_dropped(tiny_model):
    loaded(tiny_model)
    rec = Recorder(delay=0.01)
    server = InlineServer(rec.send)
    server.handle({**LONG, "id": 1})
    rec.wait_text(1)
    for rid in range(2, 6):  # keystrokes faster than a token: only the last one runs
        server.handle({**LONG, "id": rid, "max_tokens": 2})
    assert all(rec.wait(rid)[-1]["done"] for rid in range(1, 6))
    reasons = {o.id: o.reason for o in server.outcomes}
    assert reasons[5] == "length" and {reasons[r] for r in (2, 3, 4)} <= {"dropped", "cancelled"}
    assert all(len(rec.of(r)) == 1 for r in (2, 3, 4) if reasons[r] == "dropped")


# ---- the switch ---------------------------------------------------------------------------------------


def test_llm_complete_on_loads_the_completion_model(ip, tiny_model_b):
    from llm_magic import runtime

    run(ip, f"%config AskMagics.completion_model = {tiny_model_b!r}")
    run(ip, "%llm complete on")
    entry = runtime.get().cache.entry(llm_magic.specs.resolve(tiny_model_b))
    assert entry is not None
    entry.future.result(timeout=60)


def test_llm_complete_on_off(ip):
    _, out = run(ip, "%llm complete")
    assert out.strip() == "inline completions are on (the default model)"
    _, out = run(ip, "%llm complete off")
    assert (
        out.strip().startswith("inline completions are off")
        and ip.magics_manager.registry["AskMagics"].inline_completion is False
    )
    run(ip, "%config AskMagics.completion_model = 'coder'")
    _, out = run(ip, "%llm complete on")
    assert out.splitlines()[0] == "inline completions are on (coder)"
    assert "cannot load coder" in out  # no such model: one line, and completions stay quiet
    err, _ = run_error(ip, "%llm complete maybe")
    assert "usage: %llm complete on|off" in str(err)


def test_no_comm_target_outside_a_kernel(shell):
    from llm_magic.ipython import inline_comm

    assert inline_comm.register(shell) is False  # a terminal IPython has no comms
    inline_comm.unregister(shell)  # and unloading there is harmless


def test_a_completion_model_of_its_own_preloads_on_load_ext(shell, use_model, tiny_model_b):
    from traitlets.config import Config

    from llm_magic import runtime

    shell.config = Config({"AskMagics": {"completion_model": tiny_model_b}})
    shell.run_line_magic("load_ext", "llm_magic")
    paths = sorted(e.spec.path for e in runtime.get().cache.entries())
    assert paths == sorted([use_model, tiny_model_b])  # the default model and the completion model


def test_two_comms_do_not_stop_each_other(tiny_model):
    """Two frontends on one kernel: a completion does not give way to the other's completion (it
    gives way to asks only), so one of them gets its text instead of both getting nothing."""
    loaded(tiny_model)
    a_rec, b_rec = Recorder(delay=0.01), Recorder()
    a, b = InlineServer(a_rec.send), InlineServer(b_rec.send)
    a.handle({**LONG, "id": 1, "max_tokens": 60})
    a_rec.wait_text(1)
    b.handle({"action": "complete", "id": 2, "prefix": "x = ", "max_tokens": 4, "mode": "none"})
    a_rec.wait(1)
    b_rec.wait(2)
    assert a.outcomes[-1].reason == "length" and a.outcomes[-1].n_tokens == 60, a.outcomes
    assert b.outcomes[-1].reason == "busy", b.outcomes
