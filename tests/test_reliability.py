"""Issue 8: memory budget and LRU eviction, keep_alive, files changing on disk, bad model files,
concurrency, shutdown and reload in the middle of work, argument fuzzing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import cache as cache_mod
from llm_magic import config, generation
from llm_magic.cache import get_cache
from llm_magic.errors import ModelLoadError, ModelNotFound

from conftest import llm_threads, run
from tiny_gguf import write_tiny_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    return [str(write_tiny_model(d / f"m{i}.gguf", seed=10 + i)) for i in range(3)]


def states() -> dict[str, str]:
    return {os.path.basename(e.spec.path): e.state for e in get_cache().entries()}


# ---- memory budget ------------------------------------------------------------------------------

def test_max_loaded_models_evicts_the_least_recently_used_idle_model(three_models, caplog):
    a, b, c = three_models
    config.settings.max_loaded_models = 2
    llm_magic.ask("x", model=a, max_tokens=2)
    llm_magic.ask("x", model=b, max_tokens=2)
    llm_magic.ask("x", model=a, max_tokens=2)  # a is now the most recently used
    llm_magic.ask("x", model=c, max_tokens=2)
    assert states() == {"m0.gguf": "ready", "m1.gguf": "unloaded", "m2.gguf": "ready"}
    assert "evicted m1.gguf" in caplog.text
    assert "unloaded (evicted)" in llm_magic.status_table() and "max_loaded_models=2" in llm_magic.status_table()
    again = llm_magic.ask("x", model=b, max_tokens=2)  # reloads on demand, evicting a's neighbour
    assert again.n_tokens == 2 and states()["m1.gguf"] == "ready"
    assert sum(s == "ready" for s in states().values()) == 2


def test_a_busy_model_is_never_evicted(three_models):
    a, b, c = three_models
    config.settings.max_loaded_models = 1
    s = llm_magic.stream("long", model=a, max_tokens=200, timeout=120)
    first = next(s)  # a is generating (suspended mid-stream, holding its model)
    assert first
    result = llm_magic.ask("x", model=b, max_tokens=2)  # over the limit, but a is busy: a stays
    assert result.n_tokens == 2
    assert states()["m0.gguf"] == "ready"
    rest = s.consume()
    assert rest.finish_reason in ("length", "stop") and not rest.partial  # a's generation was never killed


def test_memory_budget(three_models):
    a, b, c = three_models
    size = os.path.getsize(a)
    config.settings.memory_budget = int(size * 2.5)
    for m in (a, b, c):
        llm_magic.ask("x", model=m, max_tokens=2)
    assert sum(st == "ready" for st in states().values()) == 2
    assert cache_mod.budget_bytes("50%") > 0 and cache_mod.budget_bytes("1GB") == 1 << 30
    assert cache_mod.budget_bytes("512MB") == 512 << 20 and cache_mod.budget_bytes(0) == 0


def test_keep_alive_unloads_idle_models(three_models):
    a, b, _ = three_models
    config.settings.keep_alive = 0.5
    llm_magic.ask("x", model=a, max_tokens=2)
    deadline = time.monotonic() + 10
    while states().get("m0.gguf") != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert states()["m0.gguf"] == "unloaded"
    assert "keep_alive" in get_cache().entries()[0].note
    assert llm_magic.ask("x", model=a, max_tokens=2).n_tokens == 2  # reloads on demand
    assert cache_mod.keep_alive_seconds("forever") is None and cache_mod.keep_alive_seconds(30) == 30


def test_budget_traits_validate(ip, caplog):
    ip.run_line_magic("config", "AskMagics.max_loaded_models = 2")
    ip.run_line_magic("config", "AskMagics.memory_budget = '40%'")
    ip.run_line_magic("config", "AskMagics.keep_alive = 300")
    assert (config.settings.max_loaded_models, config.settings.memory_budget, config.settings.keep_alive) == \
        (2, "40%", 300)
    ip.run_line_magic("config", "AskMagics.memory_budget = 'lots'")
    ip.run_line_magic("config", "AskMagics.keep_alive = 'sometimes'")
    ip.run_line_magic("config", "AskMagics.max_loaded_models = -1")
    assert "memory_budget must be" in caplog.text and "keep_alive must be" in caplog.text
    assert "max_loaded_models must be" in caplog.text
    assert config.settings.memory_budget == "40%"


# ---- files on disk ------------------------------------------------------------------------------

def test_a_replaced_file_is_reloaded_with_a_warning(tmp_path, caplog):
    path = tmp_path / "model.gguf"
    write_tiny_model(path, seed=1)
    first = llm_magic.ask("hello", model=str(path), max_tokens=10, temperature=0)
    old_model = get_cache().entries()[0].model
    replacement = tmp_path / "new.gguf"
    write_tiny_model(replacement, seed=2)
    os.replace(replacement, path)  # replaced the safe way: a new file renamed over the old one
    second = llm_magic.ask("hello", model=str(path), max_tokens=10, temperature=0)
    assert "changed on disk" in caplog.text
    assert old_model.closed and get_cache().entries()[0].model is not old_model
    assert second != first  # the new weights answer differently
    assert "the file changed" in get_cache().entries()[0].note


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "wrong_magic", "directory"])
def test_bad_model_files(kind, tmp_path, tiny_model):
    path = tmp_path / f"{kind}.gguf"
    good = Path(tiny_model).read_bytes()
    expected = {
        "empty": "the file is empty",
        "random": "not a GGUF file",
        "truncated": "truncated",
        "wrong_magic": "not a GGUF file",
        "directory": "is a directory",
    }[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif kind == "wrong_magic":
        path.write_bytes(b"GGML" + good[4:])
    else:
        path.mkdir()
    with pytest.raises((ModelLoadError, ModelNotFound), match=expected):
        llm_magic.ask("x", model=str(path))
    assert llm_magic.ask("x", model=tiny_model, max_tokens=2).n_tokens == 2  # others live on


def test_unreadable_model_file(tiny_model, tmp_path):
    """As root, file permissions are not enforced: drop CAP_DAC_OVERRIDE/READ_SEARCH in a child."""
    path = tmp_path / "secret.gguf"
    shutil.copy(tiny_model, path)
    os.chmod(path, 0)
    os.chmod(tmp_path, 0o755)
    code = ("import llm_magic, sys\n"
            "try:\n    llm_magic.ask('x', model=sys.argv[1])\n"
            "except llm_magic.ModelLoadError as e:\n    print('ERROR', e)\n"
            "print('OTHER', llm_magic.ask('x', model=sys.argv[2], max_tokens=2).n_tokens)\n")

    def drop_caps():
        import ctypes

        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                if libc.prctl(24, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl")

    proc = subprocess.run([sys.executable, "-c", code, str(path), tiny_model], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, preexec_fn=drop_caps)
    if "prctl" in proc.stderr:
        pytest.skip("cannot drop capabilities here")
    assert proc.returncode == 0, proc.stderr
    assert "ERROR cannot read" in proc.stdout and "Permission denied" in proc.stdout
    assert "OTHER 2" in proc.stdout


# ---- concurrency --------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_eight_threads_across_models_get_their_own_complete_answers(three_models):
    a, b, _ = three_models
    jobs = [(m, f"prompt number {i}") for i, m in enumerate([a, a, a, a, b, b, b, b])]
    expected = {(m, p): llm_magic.ask(p, model=m, max_tokens=60, temperature=0) for m, p in jobs}
    results: dict = {}
    errors: list = []
    barrier = threading.Barrier(len(jobs))

    def worker(m, p):
        try:
            barrier.wait(30)
            results[(m, p)] = llm_magic.ask(p, model=m, max_tokens=60, temperature=0, timeout=120)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    for job in jobs:
        got = results[job]
        assert got.finish_reason == "length" and got.n_tokens == 60
        assert got == expected[job]  # complete, and its own prompt's answer: no interleaving


# ---- shutdown and reload ------------------------------------------------------------------------

def test_reload_ext_during_a_background_generation_leaves_nothing(_shell, use_model):
    _shell.run_line_magic("load_ext", "llm_magic")
    stream = generation.Stream("go on and on", max_tokens=100_000, timeout=60)
    future = generation.run_in_background(stream)
    deadline = time.monotonic() + 30
    while not stream.answer and stream.phase != "generate" and time.monotonic() < deadline:
        time.sleep(0.02)
    old_models = [e.model for e in get_cache().entries()]
    _shell.run_line_magic("reload_ext", "llm_magic")
    answer = future.result(10)
    assert answer.finish_reason == "cancelled"
    assert all(m.closed for m in old_models if m is not None)
    _shell.run_line_magic("unload_ext", "llm_magic")
    assert llm_threads() == []
    assert get_cache().entries() == []


def _kernel(env_model: str):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "LLM_MAGIC_MODEL": env_model})
    km.shutdown_wait_time = 30  # no SIGKILL after 5 s that would hide a hang: the kernel must exit by itself
    return km, kc


@pytest.mark.slow
def test_kernel_shutdown_mid_stream_exits_within_5_s(tiny_model):
    km, kc = _kernel(tiny_model)
    try:
        kc.execute_interactive("%load_ext llm_magic", timeout=60)
        kc.execute("%%ask -n 100000 -t 300\nTalk forever")
        time.sleep(1.0)
        pid = km.provisioner.process.pid
        t0 = time.monotonic()
        km.shutdown_kernel(now=False)  # a polite shutdown request, as Jupyter sends
        elapsed = time.monotonic() - t0
        assert elapsed < 5, elapsed
        assert not km.is_alive()
        assert km.provisioner is None or km.provisioner.process is None or km.provisioner.process.poll() is not None
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)


@pytest.mark.slow
def test_kernel_restart_mid_load_exits_within_5_s(tiny_model):
    km, kc = _kernel(tiny_model)
    try:
        # a load that takes 60 s: the real loader, started late
        kc.execute_interactive("import time, llm_magic.cache as c; real = c._default_loader; "
                               "c._default_loader = lambda spec: (time.sleep(60), real(spec))[1]", timeout=60)
        kc.execute_interactive("%load_ext llm_magic", timeout=60)  # starts the (slow) preload
        msg_id = kc.execute("%%ask -n 3\nhi")  # waits for the load
        while True:  # the cell says it is waiting for the load
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and "waiting for" in str(msg["content"]):
                break
        t0 = time.monotonic()
        km.shutdown_kernel(now=False, restart=True)
        elapsed = time.monotonic() - t0
        assert elapsed < 5, elapsed  # it exited by itself, well before any kill
        km.start_kernel()
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("1 + 1", timeout=30)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_load_can_be_abandoned(tiny_model):
    """llama.cpp's progress callback is the only way to stop a load: unload/shutdown use it."""
    from llm_magic.engines.llama import LocalModel

    abort = threading.Event()
    abort.set()
    with pytest.raises(ModelLoadError, match="abandoned"):
        LocalModel.load(config.resolve(tiny_model), abort=abort)
    model = LocalModel.load(config.resolve(tiny_model), abort=threading.Event())  # not set: loads
    model.close()


# ---- fuzzing ------------------------------------------------------------------------------------

def test_fuzzed_magic_lines_raise_nothing_but_usage_error(ip, tiny_model):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ip.run_line_magic("config", f"AskMagics.models = {{'t': {{'path': {tiny_model!r}, 'n_ctx': 64}}}}")
    ip.run_line_magic("config", "AskMagics.model = 't'")
    ip.run_line_magic("config", "AskMagics.timeout = 5")
    flags = ["-m", "-t", "-n", "-f", "-o", "-c", "--chat", "--system", "--temperature", "--top-p", "--top-k",
             "--repeat-penalty", "--seed", "--stop", "--raw", "--no-interpolate", "--grammar", "--", "-x", "--bogus"]
    # printable text: IPython itself splits a cell at control characters such as \x1e (str.splitlines)
    printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=8)
    values = st.one_of(st.sampled_from(["t", "0", "-1", "1e9", "nan", "json", "code", "yaml", "x y", "'", '"',
                                        "{a}", "/no/file", "root ::= \"a\"", "3"]),
                       printable)
    token = st.one_of(st.sampled_from(flags), values)
    line = st.lists(token, max_size=7).map(" ".join)
    llm_words = st.sampled_from(["status", "load", "unload", "alias", "aliases", "history", "reset", "help",
                                 "explain", "bogus", "--all", "--wait", "x", "t", "'"])
    llm_line = st.lists(st.one_of(llm_words, values), min_size=1, max_size=5).map(" ".join)

    def check(cell: str) -> None:
        result, out = run(ip, cell)
        err = result.error_in_exec
        assert err is None or isinstance(err, UsageError), (cell, repr(err), out[-500:])

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
    result, out = run(ip, "%%ask -n 2 -o ok\nstill alive")
    assert result.success and ip.user_ns["ok"].n_tokens == 2
