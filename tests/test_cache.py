"""llm_magic.cache: ``ModelCache`` on real tiny GGUF models — each model built once per spec,
concurrent loads sharing one load, background failures, unloading, a bounded close_all, LRU
eviction (max_loaded_models, memory_budget), keep_alive, busy models never evicted, other load
options replacing a model (an idle one at once, a busy one after its generation), a model file
replaced on disk, and an abandoned load."""

from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path

import pytest

import llm_magic
from llm_magic import cache as cache_mod
from llm_magic import runtime
from llm_magic.cache import ModelCache
from llm_magic.cache_entry import Entry
from llm_magic.engines import load_engine
from llm_magic.errors import CacheClosed, ConfigError, LLMMagicError, LoadTimeout, ModelLoadError
from llm_magic.eviction import same_model
from llm_magic.settings import parse_bytes, parse_seconds
from llm_magic.specs import ModelSpec, physical_cores, resolve

from conftest import run
from tiny_gguf import write_tiny_model


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    return [str(write_tiny_model(d / f"m{i}.gguf", seed=10 + i)) for i in range(3)]


def states() -> dict[str, str]:
    return {os.path.basename(e.spec.path): e.state for e in runtime.get().cache.entries()}


def cached_rows() -> list[dict]:
    """``models()`` less the rows of models that are only configured (aliases, the default model)."""
    return [m for m in llm_magic.models() if "kind" in m]  # a configured-only row has no kind


# ---- loading ------------------------------------------------------------------------------------


def test_model_is_built_once_per_spec(tiny_model, llama_constructions):
    for _ in range(3):
        llm_magic.ask("hi", model=tiny_model, max_tokens=5)
    assert llama_constructions["n"] == 1
    assert runtime.get().cache.constructions == 1
    [info] = cached_rows()
    assert info["uses"] == 3 and info["state"] == "ready" and info["load_s"] > 0
    assert set(info) >= {"name", "path", "state", "size_bytes", "load_s", "uses", "last_used", "error"}
    assert info["size_bytes"] == os.path.getsize(tiny_model)
    assert info["options"] == ""  # loaded with the default options


def test_concurrent_loads_share_one_load(tiny_model, llama_constructions):
    def slow_loader(spec, abort=None):
        time.sleep(0.5)
        return load_engine(spec, abort)

    cache = ModelCache(loader=slow_loader)
    try:
        spec = resolve(tiny_model)
        entries: list = []
        threads = [
            threading.Thread(target=lambda: entries.append(cache.get(spec, deadline=time.monotonic() + 30)))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(entries) == 4 and all(e is entries[0] for e in entries)
        assert entries[0].state == "ready" and entries[0].model is not None
        assert llama_constructions["n"] == 1 and cache.constructions == 1
    finally:
        cache.close_all()


def test_concurrent_asks_share_one_load(tiny_model, llama_constructions, monkeypatch):
    real = cache_mod.load_engine
    monkeypatch.setattr(cache_mod, "load_engine", lambda spec, abort=None: (time.sleep(0.5), real(spec, abort))[1])
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(llm_magic.ask("x", model=tiny_model, max_tokens=3)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 4 and all(a.finish_reason == "length" for a in answers)
    assert llama_constructions["n"] == 1


def test_a_load_past_the_deadline_goes_on_in_the_background(tiny_model):
    gate = threading.Event()
    cache = ModelCache(loader=lambda spec, abort=None: (gate.wait(30), load_engine(spec, abort))[1])
    try:
        spec = resolve(tiny_model)
        with pytest.raises(LoadTimeout, match="still loading"):
            cache.get(spec, deadline=time.monotonic() + 0.2)
        [entry] = cache.entries()
        assert entry.state == "loading" and entry.loading_for() > 0
        gate.set()
        assert cache.get(spec, deadline=time.monotonic() + 30) is entry and entry.state == "ready"
    finally:
        gate.set()
        cache.close_all()


def test_background_failure_is_kept_raised_once_then_retried(corrupt_files, monkeypatch):
    path = str(corrupt_files["not_gguf"])
    calls = {"n": 0}
    real = cache_mod.load_engine

    def counting(spec, abort=None):
        calls["n"] += 1
        return real(spec, abort)

    monkeypatch.setattr(cache_mod, "load_engine", counting)
    [entry] = llm_magic.preload(path)
    entry.future.exception(timeout=10)
    assert entry.state == "failed" and "not a GGUF" in entry.error and not entry.error_reported
    assert "failed" in llm_magic.status_table()  # kept for the status
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        llm_magic.ask("x", model=path)
    assert calls["n"] == 1  # the background load's error was raised, not a new load's
    # asking again retries the load (and fails again, the same clear way)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        llm_magic.ask("x", model=path)
    assert calls["n"] == 2


# ---- unloading ----------------------------------------------------------------------------------


def test_unload_one_model(tiny_model, tiny_model_b):
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    llm_magic.ask("x", model=tiny_model_b, max_tokens=2)
    [first] = runtime.get().cache.find("tiny.gguf")
    model = first.model
    assert llm_magic.unload("tiny.gguf") == 1
    assert model.closed and first.state == "unloaded"
    assert [m["name"] for m in cached_rows()] == ["tiny-b.gguf"]
    with pytest.raises(ConfigError, match="no loaded model"):
        llm_magic.unload("tiny.gguf")
    assert llm_magic.ask("x", model=tiny_model, max_tokens=2).n_tokens == 2  # reloads on demand


def test_unload_while_another_thread_streams_is_safe(tiny_model):
    result = {}
    started = threading.Event()

    def long_ask():
        s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=60)
        result["a"] = s.consume(lambda _chunk: started.set())

    t = threading.Thread(target=long_ask)
    t.start()
    assert started.wait(30)
    assert llm_magic.unload(tiny_model) == 1
    t.join(10)
    assert not t.is_alive() and result["a"].finish_reason == "cancelled" and len(result["a"]) > 0
    assert llm_magic.ask("again", model=tiny_model, max_tokens=3).n_tokens == 3  # reloaded


def test_cache_close_all_is_bounded_even_when_a_load_hangs(tiny_model):
    gate = threading.Event()
    c = ModelCache(loader=lambda spec, abort=None: (gate.wait(30), types.SimpleNamespace(close=lambda: None))[1])
    entry = c.load(resolve(tiny_model))
    t0 = time.monotonic()
    c.close_all(timeout=0.5)
    assert time.monotonic() - t0 < 2
    assert c.closed and entry.abort.is_set()  # the hanging load was told to give up
    with pytest.raises(CacheClosed):
        c.load(resolve(tiny_model))
    gate.set()


# ---- memory budget ------------------------------------------------------------------------------


def test_max_loaded_models_evicts_the_least_recently_used_idle_model(three_models, caplog):
    a, b, c = three_models
    llm_magic.current_settings().max_loaded_models = 2
    llm_magic.ask("x", model=a, max_tokens=2)
    llm_magic.ask("x", model=b, max_tokens=2)
    llm_magic.ask("x", model=a, max_tokens=2)  # a is now the most recently used
    llm_magic.ask("x", model=c, max_tokens=2)
    assert states() == {"m0.gguf": "ready", "m1.gguf": "unloaded", "m2.gguf": "ready"}
    assert "evicted m1.gguf" in caplog.text
    assert "unloaded (evicted)" in llm_magic.status_table() and "max_loaded_models=2" in llm_magic.status_table()
    again = llm_magic.ask("x", model=b, max_tokens=2)  # reloads on demand, evicting a's neighbour
    assert again.n_tokens == 2 and states()["m1.gguf"] == "ready"
    assert states()["m0.gguf"] == "unloaded"  # a was used before c: a goes
    assert sum(s == "ready" for s in states().values()) == 2


def test_a_busy_model_is_never_evicted(three_models, caplog):
    a, b, c = three_models
    llm_magic.current_settings().max_loaded_models = 1
    s = llm_magic.stream("long", model=a, max_tokens=200, timeout=120)
    first = next(s)  # a is generating (suspended mid-stream, holding its model)
    assert first
    result = llm_magic.ask("x", model=b, max_tokens=2)  # over the limit, but a is busy: a stays
    assert result.n_tokens == 2
    assert states()["m0.gguf"] == "ready"
    assert "goes over max_loaded_models=1" in caplog.text
    rest = s.consume()
    assert rest.finish_reason in ("length", "stop") and not rest.partial  # a's generation was never killed
    assert rest.startswith(first)


def test_memory_budget(three_models):
    a, b, c = three_models
    size = llm_magic.estimate(a).total_bytes  # the budget counts each model's memory estimate
    llm_magic.current_settings().memory_budget = int(size * 2.5)
    for m in (a, b, c):
        llm_magic.ask("x", model=m, max_tokens=2)
    assert states() == {"m0.gguf": "unloaded", "m1.gguf": "ready", "m2.gguf": "ready"}
    assert "memory_budget=" in runtime.get().cache.find("m0.gguf")[0].note
    assert parse_bytes("50%") > 0 and parse_bytes("1GB") == 1 << 30
    assert parse_bytes("512MB") == 512 << 20 and parse_bytes(0) == 0


def test_keep_alive_unloads_idle_models(three_models):
    a, b, _ = three_models
    llm_magic.current_settings().keep_alive = 0.5
    llm_magic.ask("x", model=a, max_tokens=2)
    deadline = time.monotonic() + 10
    while states().get("m0.gguf") != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert states()["m0.gguf"] == "unloaded"
    assert "keep_alive" in runtime.get().cache.entries()[0].note
    assert llm_magic.ask("x", model=a, max_tokens=2).n_tokens == 2  # reloads on demand
    assert parse_seconds("forever") is None and parse_seconds(30) == 30


def test_budget_settings_through_config(ip, caplog):
    run(ip, "%config AskMagics.max_loaded_models = 2")
    run(ip, "%config AskMagics.memory_budget = '40%'")
    run(ip, "%config AskMagics.keep_alive = 300")
    s = llm_magic.current_settings()
    assert (s.max_loaded_models, s.memory_budget, s.keep_alive) == (2, "40%", 300)
    assert s.memory_budget_bytes > 0 and s.keep_alive_s == 300
    run(ip, "%config AskMagics.memory_budget = 'lots'")  # %config logs the refusal, never raises
    run(ip, "%config AskMagics.keep_alive = 'sometimes'")
    run(ip, "%config AskMagics.max_loaded_models = -1")
    assert "memory_budget must be bytes" in caplog.text
    assert "keep_alive must be seconds or 'forever'" in caplog.text
    assert "max_loaded_models must be >= 0" in caplog.text
    assert (s.max_loaded_models, s.memory_budget, s.keep_alive) == (2, "40%", 300)  # the old values stay


# ---- other load options replace the model --------------------------------------------------------


def test_changing_n_ctx_replaces_the_model(tiny_model, llama_constructions):
    llm_magic.ask("hi", model=tiny_model, max_tokens=2)
    [old] = runtime.get().cache.entries()
    old_model = old.model
    llm_magic.current_settings().n_ctx = 512
    assert llm_magic.ask("hi", model=tiny_model, max_tokens=2).n_tokens == 2
    assert llama_constructions["n"] == 2  # a new instance, with the new options
    assert old_model.closed and old.state == "unloaded"  # and the old one is gone, not kept beside it
    [entry] = runtime.get().cache.entries()
    assert entry.spec.n_ctx == 512 and entry.model is not old_model
    [row] = cached_rows()
    assert (row["name"], row["state"], row["options"], row["n_ctx"]) == ("tiny.gguf", "ready", "n_ctx=512", 512)
    llm_magic.ask("hi", model=tiny_model, max_tokens=2)
    assert llama_constructions["n"] == 2  # the replacement is the cached model now


def test_a_busy_model_is_replaced_after_its_generation(tiny_model):
    started, go_on, result = threading.Event(), threading.Event(), {}

    def long_ask():
        s = llm_magic.stream("go", model=tiny_model, max_tokens=40, timeout=60)
        result["a"] = s.consume(lambda _chunk: (started.set(), go_on.wait(30)))  # holds the model meanwhile

    t = threading.Thread(target=long_ask)
    t.start()
    try:
        assert started.wait(30)
        [old] = runtime.get().cache.entries()
        old_model = old.model
        llm_magic.current_settings().n_ctx = 512
        assert llm_magic.ask("x", model=tiny_model, max_tokens=3).n_tokens == 3  # the new instance answers
        assert not old_model.closed and old.state == "closing"  # never closed under a generation
        rows = {m["options"]: m["state"] for m in cached_rows()}
        assert rows == {"n_ctx=4096": "closing", "n_ctx=512": "ready"}  # each row says its options
        table = llm_magic.status_table()
        assert "n_ctx=4096" in table and "closes when its request ends" in table and "n_ctx=512" in table
    finally:
        go_on.set()
        t.join(30)
    answer = result["a"]
    assert answer.finish_reason in ("length", "stop") and not answer.partial  # it finished, on the old instance
    assert old_model.closed and old.state == "unloaded"  # closed when its generation ended
    assert [(m["state"], m["options"]) for m in cached_rows()] == [("ready", "n_ctx=512")]


def test_switching_back_while_the_old_model_is_busy_reuses_it(tiny_model, llama_constructions):
    started, go_on, result = threading.Event(), threading.Event(), {}

    def long_ask():
        s = llm_magic.stream("go", model=tiny_model, max_tokens=30, timeout=60)
        result["a"] = s.consume(lambda _chunk: (started.set(), go_on.wait(30)))

    t = threading.Thread(target=long_ask)
    t.start()
    try:
        assert started.wait(30)
        [old] = runtime.get().cache.entries()
        llm_magic.current_settings().n_ctx = 512
        llm_magic.ask("x", model=tiny_model, max_tokens=2)
        [new] = [e for e in runtime.get().cache.entries() if e is not old]
        new_model = new.model
        llm_magic.current_settings().n_ctx = 4096
        assert llm_magic.preload(tiny_model) == [old] and old.state == "ready"  # taken back: no load
        assert new_model.closed and llama_constructions["n"] == 2
    finally:
        go_on.set()
        t.join(30)
    assert result["a"].finish_reason in ("length", "stop") and not result["a"].partial
    assert not old.model.closed and runtime.get().cache.entries() == [old]


def test_replacing_a_model_that_is_loading_abandons_its_load(tiny_model):
    gate, waiting = threading.Event(), threading.Event()

    def gated(spec, abort=None):
        waiting.set()
        gate.wait(30)
        return load_engine(spec, abort)

    cache = ModelCache(loader=gated)
    try:
        first = cache.load(resolve(tiny_model))
        assert waiting.wait(10)
        llm_magic.current_settings().n_ctx = 512
        second = cache.load(resolve(tiny_model))
        assert first.abort.is_set() and cache.entries() == [second]
        gate.set()
        error = first.future.exception(timeout=30)  # its waiters are told why, and do not reload it
        assert isinstance(error, ModelLoadError) and "replaced by n_ctx=512 while it loaded" in str(error)
        assert cache.get(second.spec, deadline=time.monotonic() + 30).state == "ready"
    finally:
        gate.set()
        cache.close_all()


def test_other_files_and_other_projectors_are_other_models(tiny_model, tiny_model_b):
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    llm_magic.ask("x", model=tiny_model_b, max_tokens=2)
    llm_magic.current_settings().models = {"small": {"path": tiny_model, "n_ctx": 256}}
    llm_magic.ask("x", model="small", max_tokens=2)  # the same file as tiny.gguf: replaces it
    assert sorted((m["name"], m["options"]) for m in cached_rows()) == [("small", "n_ctx=256"), ("tiny-b.gguf", "")]
    plain, vision = ModelSpec(path="/m.gguf"), ModelSpec(path="/m.gguf", mmproj="/p.gguf")
    entries = [Entry(spec=plain), Entry(spec=vision)]
    assert same_model(entries, ModelSpec(path="/m.gguf", n_ctx=8)) == [entries[0]]  # a vision pair: its own
    assert same_model(entries, ModelSpec(path="/m.gguf", mmproj="/q.gguf")) == []  # another projector
    assert same_model(entries, ModelSpec(path="/m.gguf", mmproj="/p.gguf", n_ctx=8)) == [entries[1]]


# ---- files on disk ------------------------------------------------------------------------------


def test_a_replaced_file_is_reloaded_with_a_warning(tmp_path, caplog):
    path = tmp_path / "model.gguf"
    write_tiny_model(path, seed=1)
    first = llm_magic.ask("hello", model=str(path), max_tokens=10, temperature=0)
    cache = runtime.get().cache
    old_model = cache.entries()[0].model
    replacement = tmp_path / "new.gguf"
    write_tiny_model(replacement, seed=2)
    os.replace(replacement, path)  # replaced the safe way: a new file renamed over the old one
    second = llm_magic.ask("hello", model=str(path), max_tokens=10, temperature=0)
    assert "changed on disk" in caplog.text
    assert old_model.closed and cache.entries()[0].model is not old_model
    assert second != first  # the new weights answer differently
    assert "the file changed" in cache.entries()[0].note
    assert cache.constructions == 2


# ---- abandoned loads ----------------------------------------------------------------------------


def test_a_load_can_be_abandoned(tiny_model):
    """llama.cpp's progress callback is the only way to stop a load: unload/shutdown use it."""
    from llm_magic.engines.llama import LocalModel

    abort = threading.Event()
    abort.set()
    with pytest.raises(ModelLoadError, match="abandoned"):
        LocalModel.load(resolve(tiny_model), abort=abort)
    model = LocalModel.load(resolve(tiny_model), abort=threading.Event())  # not set: loads
    try:
        assert not model.closed and model.n_ctx > 0
        assert len(model.prepare("hello").tokens) > 1
    finally:
        model.close()
    assert model.closed


def test_unloading_a_model_that_is_loading_abandons_the_load(tiny_model, llama_constructions):
    gate, waiting = threading.Event(), threading.Event()

    def gated(spec, abort=None):
        waiting.set()
        gate.wait(30)
        return load_engine(spec, abort)  # the real loader, with the abort event already set

    cache = ModelCache(loader=gated)
    try:
        entry = cache.load(resolve(tiny_model))
        assert waiting.wait(10)
        assert cache.unload(entry) and entry.abort.is_set()
        assert cache.entries() == []
        gate.set()
        error = entry.future.exception(timeout=30)
        assert isinstance(error, ModelLoadError) and "abandoned" in str(error)
        assert cache.constructions == 0 and entry.model is None
        assert llama_constructions["n"] == 1  # llama.cpp started, and gave up at its progress callback
    finally:
        gate.set()
        cache.close_all()


def test_requests_with_old_and_new_options_do_not_replace_each_other_forever(tmp_path):
    """A request under way never reloads options that were replaced meanwhile (which would retire the
    newer instance, whose waiter would do the same back): the later options win, the earlier request
    is told its options changed. The loader notices an abort slowly, as a real load can."""
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x")
    loads = {"started": 0, "aborted": 0}

    class Fake:
        concurrency, closed, kind = 1, False, "local"

        def close(self) -> None:
            self.closed = True

        def info(self) -> dict:
            return {}

    def loader(spec, abort):
        loads["started"] += 1
        time.sleep(0.3)
        if abort.is_set():
            loads["aborted"] += 1
            raise RuntimeError("aborted")
        return Fake()

    cache = ModelCache(loader=loader)
    cores = physical_cores()
    old = ModelSpec(path=str(path), n_ctx=2048, n_threads=cores, n_threads_batch=cores)
    new = ModelSpec(path=str(path), n_ctx=8192, n_threads=cores, n_threads_batch=cores)
    results: dict[str, object] = {}

    def ask(name: str, spec: ModelSpec, delay: float) -> None:
        time.sleep(delay)
        try:
            results[name] = cache.wait(spec, time.monotonic() + 5, lambda: False).state
        except LLMMagicError as e:
            results[name] = str(e)

    threads = [threading.Thread(target=ask, args=a) for a in (("old", old, 0.0), ("new", new, 0.05))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results["new"] == "ready"
        assert "m.gguf was replaced by n_ctx=8192 (its options changed): ask again" in str(results["old"])
        assert loads == {"started": 2, "aborted": 1}  # one abandoned load, no ping-pong
    finally:
        cache.close_all()


def test_a_half_read_stream_does_not_keep_a_replaced_model_open(tiny_model):
    """After the options change, a stream nobody reads any more no longer pins the old instance:
    the cache's watcher ends it (cancelled, its text kept) and the old model closes."""
    llm_magic.current_settings().keep_alive = 3600  # the watcher ticks fast; nothing expires
    half = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=120)
    first = next(half)
    [old] = runtime.get().cache.entries()
    old_model = old.model
    llm_magic.current_settings().n_ctx = 2048  # a new instance replaces it
    assert llm_magic.ask("again", model=tiny_model, max_tokens=3).n_tokens == 3
    deadline = time.monotonic() + 20
    while not (old_model.closed and half.answer is not None) and time.monotonic() < deadline:
        time.sleep(0.05)  # the model closes as the generator unwinds; the answer is set just after
    assert old_model.closed
    assert half.answer is not None and half.answer.finish_reason == "cancelled" and half.answer.startswith(first)
    assert [e.state for e in runtime.get().cache.entries()] == ["ready"]


def test_downloads_never_hold_the_threads_local_models_load_on(tiny_model, tmp_path, monkeypatch):
    """Two hf: downloads stalled mid-file (as many as the cache has load threads): a local model
    still loads at once — downloads run on threads of their own."""
    pytest.importorskip("huggingface_hub")
    from hub_server import FakeHub

    from llm_magic import hf_source, model_sources

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hf_source._listings.clear()
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    data = Path(tiny_model).read_bytes()
    names = []
    for i in range(2):
        hub.add_repo(f"org/repo{i}", {"m-Q4_K_M.gguf": data})
        names.append(f"hf:org/repo{i}:Q4_K_M")
    hub.stall_at = len(data) // 2
    try:
        entries = [e for name in names for e in llm_magic.preload(name)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            (p := model_sources.progress(e.spec.path)) is not None and p.done >= len(data) // 2 for e in entries
        ):
            time.sleep(0.05)
        assert all(e.state == "loading" for e in entries)  # both downloads are stalled
        local = write_tiny_model(tmp_path / "local.gguf", seed=5)
        t0 = time.monotonic()
        assert llm_magic.ask("x", model=str(local), max_tokens=2, timeout=30).n_tokens == 2
        assert time.monotonic() - t0 < 30
    finally:
        for name in names:
            llm_magic.unload(name)
        hub.release()
        hub.stop()
        hf_source._listings.clear()
