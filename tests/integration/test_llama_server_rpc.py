"""Past one machine: llama.cpp's `llama-server --rpc 127.0.0.1:P1,127.0.0.1:P2` spreads a model over two
`rpc-server` workers (on loopback here, on other hosts in real use), and `%%ask -m` streams from it like from any
remote model — Stop and timeouts included. The servers are llama.cpp's own, built once from the sources vendored
in the llama-cpp-python sdist (tests/llama_server.py), started and killed by the fixtures."""

from __future__ import annotations

import contextlib
import signal
import time

import pytest

import llm_magic
from llm_magic import default_model

from conftest import interrupt_after, run
from llama_server import LlamaServer, RpcServer, model_buffers, need_llama_cpp_tools

pytest.importorskip("openai")

pytestmark = [pytest.mark.slow, pytest.mark.llama_cpp_tools]


@contextlib.contextmanager
def rpc_cluster(model: str, n_ctx: int = 32768):
    """Two rpc-server workers and a llama-server that puts every layer on them (`-ngl 99`)."""
    need_llama_cpp_tools()
    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(RpcServer()) for _ in range(2)]
        server = stack.enter_context(
            LlamaServer(
                model, alias="tiny", n_ctx=n_ctx, rpc=[w.endpoint for w in workers], extra=["-ngl", "99", "-lv", "4"]
            )
        )
        yield server, workers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tiny_gguf import write_tiny_model

    # 4 blocks, so that each worker has whole layers to hold
    model = str(write_tiny_model(tmp_path_factory.mktemp("rpc") / "tiny.gguf", n_layer=4, n_ctx_train=32768))
    with rpc_cluster(model) as (server, workers):
        yield server, workers


@pytest.fixture
def ip_cluster(ip, cluster):
    server, _ = cluster
    ip.run_line_magic("config", f"AskMagics.models = {{'cluster': {{'base_url': {server.url!r}, 'model': 'tiny'}}}}")
    return ip


def test_the_workers_hold_the_model(cluster):
    server, workers = cluster
    log = server.log()
    buffers = model_buffers(log)
    # each worker, named by its endpoint, holds a share of the weights; the host only the token embeddings
    assert all(buffers.get(w.endpoint, 0) > 0 for w in workers), buffers
    assert "offloaded 5/5 layers to GPU" in log  # 4 blocks + the output layer, none computed on the host
    for w in workers:
        assert "Accepted client connection" in w.log()  # llama-server really talked to each worker


def test_ask_streams_from_the_cluster(ip_cluster):
    s = llm_magic.stream("Tell me about Paris", model="cluster", max_tokens=40, temperature=0)
    arrivals = [(time.monotonic(), chunk) for chunk in s]
    answer = s.answer
    assert answer.finish_reason == "length" and answer.n_tokens == 40
    assert len(arrivals) >= 20 and arrivals[-1][0] > arrivals[0][0]  # piece by piece, not one blob
    assert answer.text == "".join(c for _, c in arrivals)
    _, out = run(ip_cluster, "%%ask -m cluster -n 12 --temperature 0 -o a\nTell me about Paris")
    a = ip_cluster.user_ns["a"]
    assert a.model == "cluster" and a.n_tokens == 12 and a.finish_reason == "length"
    assert a.text and a.text in out and answer.text.startswith(a.text)  # greedy: the same first tokens


def test_stop_keeps_the_partial_answer_and_frees_the_cluster(ip_cluster):
    watcher = interrupt_after(5)
    t0 = time.monotonic()
    _, out = run(ip_cluster, "%%ask -m cluster -n 100000 -t 60 -o a\nTalk")
    watcher.join()
    assert time.monotonic() - t0 < 30  # the Stop ended it, not the 60 s timeout
    a = ip_cluster.user_ns["a"]
    assert a.finish_reason == "cancelled" and a.n_tokens >= 5 and len(a) > 0
    assert a.text in out and f"[cancelled — partial answer, {a.n_tokens} tokens]" in out
    run(ip_cluster, "%%ask -m cluster -n 4 -o b\nstill there?")  # the server stopped generating: free at once
    assert ip_cluster.user_ns["b"].n_tokens == 4 and ip_cluster.user_ns["b"].finish_reason == "length"


def test_timeout_keeps_the_partial_answer(ip_cluster):
    _, out = run(ip_cluster, "%%ask -m cluster -n 100000 -t 2 -o a\nWrite forever")
    a = ip_cluster.user_ns["a"]
    assert a.finish_reason == "timeout" and a.n_tokens > 0 and len(a) > 0
    assert 1.9 < a.total_s < 10 and a.text in out
    b = llm_magic.ask("again", model="cluster", max_tokens=5)
    assert b.finish_reason == "length" and b.n_tokens == 5


def test_a_worker_dying_mid_answer_is_one_line_and_the_kernel_goes_on(ip, tiny_model, tmp_path_factory):
    from tiny_gguf import write_tiny_model

    model = str(write_tiny_model(tmp_path_factory.mktemp("rpcdie") / "tiny.gguf", n_layer=4, n_ctx_train=32768))
    with rpc_cluster(model) as (server, workers):
        ip.run_line_magic("config", f"AskMagics.models = {{'dying': {{'base_url': {server.url!r}, 'model': 'tiny'}}}}")
        s = llm_magic.stream("go", model="dying", max_tokens=100_000, timeout=60)
        got = []
        for chunk in s:
            got.append(chunk)
            if len(got) == 20:
                workers[1].proc.send_signal(signal.SIGKILL)
        a = s.answer
        assert a.finish_reason == "error" and a.text.startswith("".join(got[:20]))
        assert "\n" not in a.error and server.url in a.error
    run(ip, "%%ask -n 3 -o c\nstill here?")  # the local model (the kernel's default) still answers
    assert ip.user_ns["c"].n_tokens == 3


@pytest.mark.real_model
@pytest.mark.skipif(not default_model.is_installed(), reason="needs the default-model extra")
def test_gemma_spread_over_two_workers_knows_the_capital_of_france(ip):
    with rpc_cluster(str(default_model.ensure()), n_ctx=4096) as (server, workers):
        buffers = model_buffers(server.log())
        assert all(buffers.get(w.endpoint, 0) > 10 for w in workers), buffers  # MiB of Gemma's weights on each
        ip.run_line_magic(
            "config",
            f"AskMagics.models = {{'gemma': {{'base_url': {server.url!r}, 'model': 'tiny', 'endpoint': 'completions'}}}}",
        )
        _, out = run(ip, "%%ask -m gemma --temperature 0 -n 24 -o a\nWhat is the capital of France?")
        assert "Paris" in ip.user_ns["a"] and "Paris" in out
