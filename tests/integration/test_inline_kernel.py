"""The ``llm_magic.inline`` comm in a real Jupyter kernel (jupyter_client): streamed replies with
one final done, cancellation by a newer id and by ``cancel``, bad messages answered with a quiet
done, and (ipykernel >= 7) completions served on a subshell while a cell runs on the main shell."""

from __future__ import annotations

import ast
import os
import queue
import time
import uuid

import pytest

pytestmark = pytest.mark.slow

TARGET = "llm_magic.inline"
LONG = {"action": "complete", "prefix": "Once upon a time", "max_tokens": 256, "mode": "none"}


class Client:
    """A frontend's side of the comm, over the raw shell and iopub channels."""

    def __init__(self, kc, subshell_id: str | None = None):
        self.kc = kc
        self.comm_id = uuid.uuid4().hex
        self.subshell_id = subshell_id
        self.replies: list[dict] = []
        self.others: list[tuple[str, dict]] = []  # other comms' replies seen by this one's pump

    def _send(self, msg_type: str, content: dict) -> None:
        msg = self.kc.session.msg(msg_type, content)
        if self.subshell_id is not None:
            msg["header"]["subshell_id"] = self.subshell_id
        self.kc.shell_channel.send(msg)

    def open(self) -> None:
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": TARGET, "data": {}})

    def send(self, data: object) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": data})

    def pump(self, timeout: float = 0.2) -> None:
        """Collect this comm's replies from iopub (other messages are dropped)."""
        end = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                return
            if msg["msg_type"] == "comm_msg" and msg["content"].get("comm_id") == self.comm_id:
                self.replies.append(msg["content"]["data"])
            elif msg["msg_type"] == "comm_msg":
                self.others.append((msg["content"].get("comm_id"), msg["content"]["data"]))
            if time.monotonic() >= end:
                return

    def of(self, rid: object) -> list[dict]:
        return [r for r in self.replies if r.get("id") == rid]

    def wait_done(self, rid: object, timeout: float = 60) -> list[dict]:
        end = time.monotonic() + timeout
        while not any(r["done"] for r in self.of(rid)):
            assert time.monotonic() < end, f"no done for {rid}: {self.replies}"
            self.pump(0.1)
        return self.of(rid)

    def wait_text(self, rid: object, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not self.of(rid):
            assert time.monotonic() < end, f"no reply for {rid}"
            self.pump(0.05)


@pytest.fixture
def kernel(tiny_model):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "LLM_MAGIC_MODEL": tiny_model})
    try:
        kc.execute_interactive(
            "%load_ext llm_magic\nimport llm_magic\nllm_magic.preload()[0].future.result(timeout=60)", timeout=120
        )
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# The tiny model writes 256 tokens faster than a client can answer the first reply: in the kernel,
# each reply is held back 10 ms (about Gemma's pace on 2 cores), so a newer request or a cancel
# really arrives while the completion runs.
SLOW_REPLIES = """
import time as _time
import llm_magic.inline as _inline
_reply = _inline._reply
def _slow_reply(send, rid, text, done):
    if not done:
        _time.sleep(0.01)
    _reply(send, rid, text, done)
_inline._reply = _slow_reply
"""


def _reasons(kc) -> dict[int, str]:
    """How each request of the kernel's open comms ended (``InlineServer.outcomes``)."""
    out: list[dict] = []
    kc.execute_interactive(
        "from llm_magic.ipython import inline_comm as _ic\n"
        "print({o.id: o.reason for c in _ic._comms for o in c.server.outcomes})",
        output_hook=out.append,
        timeout=30,
    )
    [text] = [m["content"]["text"] for m in out if m["msg_type"] == "stream"]
    return ast.literal_eval(text.strip())


def _cancel_mid_stream(client: Client, rid: int) -> list[dict]:
    """A long request, cancelled once it streams: its replies, checked to end in one done."""
    client.send({**LONG, "id": rid})
    client.wait_text(rid)
    client.send({"action": "cancel", "id": rid})
    replies = client.wait_done(rid)
    _assert_stream(replies)
    return replies


def _assert_stream(replies: list[dict]) -> None:
    assert replies and replies[-1]["done"] is True
    assert all(r["done"] is False for r in replies[:-1]) and all(set(r) == {"id", "text", "done"} for r in replies)


def test_the_comm_protocol_idle(kernel):
    _, kc = kernel
    client = Client(kc)
    client.open()
    client.send(
        {"action": "complete", "id": 1, "prefix": "Once upon a time", "suffix": "", "max_tokens": 8, "mode": "none"}
    )
    replies = client.wait_done(1)
    _assert_stream(replies)
    assert len(replies) >= 3 and "".join(r["text"] for r in replies).strip()
    kc.execute_interactive(SLOW_REPLIES, timeout=30)
    # a newer id stops the running request; so does cancel
    client.send({**LONG, "id": 2})
    client.wait_text(2)
    client.send({"action": "complete", "id": 3, "prefix": "x = ", "max_tokens": 4, "mode": "none"})
    first, second = client.wait_done(2), client.wait_done(3)
    _assert_stream(first)
    _assert_stream(second)
    assert len(first) < 256 and len(second) >= 2
    cancelled = _cancel_mid_stream(client, 4)
    assert len(cancelled) < 256
    reasons = _reasons(kc)
    assert reasons[2] == "cancelled" and reasons[4] == "cancelled", reasons  # stopped, not finished
    # bad input: a quiet done each, and the kernel still answers
    for bad in (None, "complete", {"action": "explode", "id": 5}, {"action": "complete", "id": 6, "prefix": 1}):
        client.send(bad)
    client.wait_done(6)
    assert client.of(5) == [{"id": 5, "text": "", "done": True}]
    assert client.of(6) == [{"id": 6, "text": "", "done": True}]
    assert client.of(None) == [{"id": None, "text": "", "done": True}] * 2
    out = []
    kc.execute_interactive("print('alive')", output_hook=out.append, timeout=30)
    assert any(m["content"].get("text") == "alive\n" for m in out if m["msg_type"] == "stream")


def test_switched_off_and_unloaded(kernel):
    _, kc = kernel
    client = Client(kc)
    client.open()
    kc.execute_interactive("%llm complete off", timeout=30)
    client.send({"action": "complete", "id": 1, "prefix": "Once upon", "max_tokens": 4})
    assert client.wait_done(1) == [{"id": 1, "text": "", "done": True}]
    kc.execute_interactive("%llm complete on\n%unload_ext llm_magic", timeout=30)
    client.send({"action": "complete", "id": 2, "prefix": "Once upon", "max_tokens": 4})
    client.pump(1.0)
    assert client.of(2) == []  # unloaded: the target and its comms are gone, the provider stays silent


def test_completions_on_a_subshell_while_a_cell_runs(kernel):
    km, kc = kernel
    import ipykernel

    if int(ipykernel.__version__.split(".")[0]) < 7:
        pytest.skip("kernel subshells need ipykernel >= 7")
    kc.control_channel.send(kc.session.msg("create_subshell_request", {}))
    reply = kc.control_channel.get_msg(timeout=30)
    assert reply["content"]["status"] == "ok"
    client = Client(kc, subshell_id=reply["content"]["subshell_id"])
    client.open()
    main = Client(kc)  # the same request on the main shell waits for the cell
    main.open()
    kc.execute("import time; time.sleep(6)")  # the main shell is busy for 6 s
    time.sleep(0.5)
    main.send({"action": "complete", "id": 9, "prefix": "Once upon", "max_tokens": 2})
    t0 = time.monotonic()
    client.send({"action": "complete", "id": 1, "prefix": "Once upon a time", "max_tokens": 8, "mode": "none"})
    replies = client.wait_done(1, timeout=30)
    took = time.monotonic() - t0
    _assert_stream(replies)
    assert len(replies) >= 2 and took < 4.0, took  # answered while the cell still runs
    assert [r for c, r in client.others if c == main.comm_id] == []  # the main shell's waits behind the cell
    main.replies = [r for c, r in client.others if c == main.comm_id]
    _assert_stream(main.wait_done(9, timeout=30))  # and is answered once the cell is done


def test_a_cell_started_mid_completion_does_not_capture_the_comm(kernel):
    """ipykernel 7 routes a comm's next incoming messages to the subshell of the parent of its last
    outgoing one. Replies go out from a worker thread: sent with that thread's own parent (the
    cell the main shell started meanwhile), one reply would put every later request behind it."""
    km, kc = kernel
    import ipykernel

    if int(ipykernel.__version__.split(".")[0]) < 7:
        pytest.skip("kernel subshells need ipykernel >= 7")
    kc.execute_interactive(SLOW_REPLIES, timeout=30)
    kc.control_channel.send(kc.session.msg("create_subshell_request", {}))
    reply = kc.control_channel.get_msg(timeout=30)
    client = Client(kc, subshell_id=reply["content"]["subshell_id"])
    client.open()
    client.send({"action": "complete", "id": 1, "prefix": "Once upon a time", "max_tokens": 64, "mode": "none"})
    client.wait_text(1, timeout=30)  # the completion streams (10 ms a reply) ...
    kc.execute("import time; time.sleep(15)")  # ... when the main shell starts a long cell
    cell_started = time.monotonic()
    _assert_stream(client.wait_done(1, timeout=30))
    assert len(client.of(1)) > 2
    for rid in (2, 3):  # later requests are still served on the subshell while the cell runs
        client.send({"action": "complete", "id": rid, "prefix": "Once upon a", "max_tokens": 4, "mode": "none"})
        _assert_stream(client.wait_done(rid, timeout=30))
    # and cancellation works there too, while the cell still runs
    cancelled = _cancel_mid_stream(client, 4)
    assert len(cancelled) < 100
    assert time.monotonic() - cell_started < 12.0, "a later request waited for the running cell"
