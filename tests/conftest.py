"""Shared fixtures: tiny real GGUF models, a fresh real InteractiveShell per test (as in jupysql:
it re-raises cell errors), and process-wide state reset around every test."""

from __future__ import annotations

import _thread
import atexit
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

sys.path.insert(0, str(Path(__file__).parent))

import llm_magic
from llm_magic import ask_log, runtime, settings
from llm_magic.specs import ENV_MODEL

from tiny_gguf import CHATML_TEMPLATE, write_corrupt_files, write_tiny_model

# The ask log and the file-hash cache of every test (and of the kernels tests start) live in a
# directory of this session, never in the user's home.
os.environ["LLM_MAGIC_DATA_DIR"] = _DATA_DIR = tempfile.mkdtemp(prefix="llm_magic-data-")
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)

# A long trained context: with the default n_ctx (4096) a generation can run ~4000 tokens, many
# seconds even on a quiet machine, so a 1-3 s timeout really fires (at 2048 it sometimes finished).
LONG_CTX = 32768


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_dir) -> str:
    """A real llama GGUF (random weights): loads in ~10 ms, streams hundreds of tokens/s."""
    return str(write_tiny_model(model_dir / "tiny.gguf", n_ctx_train=LONG_CTX))


@pytest.fixture(scope="session")
def tiny_model_b(model_dir) -> str:
    return str(write_tiny_model(model_dir / "tiny-b.gguf", seed=1, n_ctx_train=LONG_CTX))


@pytest.fixture(scope="session")
def chat_model(model_dir) -> str:
    return str(write_tiny_model(model_dir / "tiny-chat.gguf", chat_template=CHATML_TEMPLATE, n_ctx_train=LONG_CTX))


@pytest.fixture(scope="session")
def corrupt_files(model_dir) -> dict[str, Path]:
    return write_corrupt_files(model_dir / "corrupt")


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch, tmp_path_factory):
    """Every test starts with no models, default settings, no conversations, no last answer, no
    default model from the env and an empty ask log of its own; and leaves none behind."""
    monkeypatch.delenv(ENV_MODEL, raising=False)
    monkeypatch.setenv("LLM_MAGIC_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    ask_log.close_all()
    settings.use(None)
    runtime.get().conversations.reset()
    runtime.get().last_answer = None
    yield
    llm_magic.cleanup_models()
    ask_log.close_all()
    settings.use(None)
    runtime.get().conversations.reset()
    runtime.get().last_answer = None


@pytest.fixture
def use_model(monkeypatch, tiny_model):
    """Make the tiny model the default model, as $LLM_MAGIC_MODEL would."""
    monkeypatch.setenv(ENV_MODEL, tiny_model)
    return tiny_model


class TestingShell(InteractiveShell):
    """An InteractiveShell whose ``run_cell`` re-raises the cell's error (jupysql's fixture):
    a test cannot pass over a failed cell unnoticed; expected errors are ``pytest.raises``-ed."""

    def run_cell(self, *args, **kwargs):
        result = super().run_cell(*args, **kwargs)
        error = result.error_in_exec or result.error_before_exec
        if error is not None:
            raise error
        return result


class _ToCurrentStderr(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is at that moment (``capture_output`` swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


@pytest.fixture
def shell():
    """A fresh shell (history off), made the global instance so ``display()`` reaches it.

    As in a terminal, what goes to the root logger (``%config`` reports a refused value with
    ``logging.error``) is shown on stderr, so in the cell's output: under pytest the root logger
    has pytest's handlers, which would otherwise keep ``logging`` from printing it."""
    from traitlets.config import Config

    cfg = Config()
    cfg.HistoryManager.enabled = False
    InteractiveShell.clear_instance()
    TestingShell.clear_instance()
    ip = TestingShell.instance(config=cfg)
    shown = _ToCurrentStderr()
    shown.setLevel(logging.WARNING)
    shown.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    logging.getLogger().addHandler(shown)
    try:
        yield ip
        if "AskMagics" in ip.magics_manager.registry:
            ip.run_line_magic("unload_ext", "llm_magic")
    finally:
        logging.getLogger().removeHandler(shown)
        TestingShell.clear_instance()


@pytest.fixture
def ip(shell, use_model):
    """A fresh shell with llm_magic loaded (preloading the tiny model)."""
    shell.run_line_magic("load_ext", "llm_magic")
    return shell


@pytest.fixture
def ip_default(shell):
    """A fresh shell with llm_magic loaded and nothing configured: the default model (Gemma 3 270M)."""
    shell.run_line_magic("load_ext", "llm_magic")
    return shell


@pytest.fixture
def llama_constructions(monkeypatch):
    """Counts real ``llama_cpp.Llama`` constructions (a spy: the real constructor still runs)."""
    import llama_cpp

    count = {"n": 0}
    real_init = llama_cpp.Llama.__init__

    def counting_init(self, *args, **kwargs):
        count["n"] += 1
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "__init__", counting_init)
    return count


def llm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llm_magic")]


def run(ip, cell: str, store_history: bool = False):
    """Run a cell in the shell, capturing its output; returns (result, output). A failing cell
    raises its error (``TestingShell``)."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        result = ip.run_cell(cell, store_history=store_history)
    return result, captured.stdout + captured.stderr


class RecordingComm:
    """Stands in for the kernel's comm: records every message a widget sends, with its time (the
    way ipywidgets tests itself)."""

    kernel = "Truthy"  # ipywidgets only sends when the comm has a kernel

    def __init__(self, *args, **kwargs):
        self.comm_id = uuid.uuid4().hex
        self.messages: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

    def open(self, *args, **kwargs):
        pass

    def on_msg(self, *args, **kwargs):
        pass

    def send(self, data=None, buffers=None, **kwargs):
        with self.lock:
            self.messages.append((time.monotonic(), data))

    def close(self, *args, **kwargs):
        pass

    def values(self, key: str = "value") -> list[tuple[float, object]]:
        with self.lock:
            return [
                (t, d["state"][key])
                for t, d in self.messages
                if d and d.get("method") == "update" and key in d.get("state", {})
            ]


@pytest.fixture
def recording_comm(monkeypatch):
    """Widgets created in the test talk to ``RecordingComm``s."""
    import comm

    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm())


@pytest.fixture(scope="session", autouse=True)
def _close_widgets_at_the_end():
    """Close every widget while the interpreter is still whole: otherwise their __del__ runs
    during shutdown, after ipywidgets' registry is gone, and prints 'Exception ignored' noise."""
    yield
    try:
        from ipywidgets import Widget

        Widget.close_all()
    except Exception:  # noqa: BLE001 - ipywidgets not imported or already torn down
        pass


def held_tokens(model) -> list[int]:
    """What a local model's KV cache holds, as llm_magic's loop recorded it — checked against
    llama.cpp's own count of positions in the sequence."""
    import llama_cpp

    from llm_magic.engines import llama_private

    held = model.context_tokens()
    mem = llama_cpp.llama_get_memory(llama_private.native_context(model.llm))
    assert llama_cpp.llama_memory_seq_pos_max(mem, 0) + 1 == len(held), "llama.cpp holds other tokens"
    return held


def evaluated_tokens(answer) -> list[int]:
    """The prompt tokens the local model evaluated for ``answer`` (its latest request)."""
    [entry] = runtime.get().cache.find(answer.model)
    held = held_tokens(entry.model)
    assert len(held) >= answer.n_prompt_tokens, (len(held), answer.n_prompt_tokens)
    return held[: answer.n_prompt_tokens]


def evaluated_prompt(answer, special: bool = False) -> str:
    """The exact prompt text the local model evaluated for ``answer`` (BOS left out unless ``special``)."""
    [entry] = runtime.get().cache.find(answer.model)
    return entry.model.llm.detokenize(evaluated_tokens(answer), special=special).decode("utf-8")


def run_error(ip, cell: str, store_history: bool = False) -> tuple[BaseException, str]:
    """Run a cell that must fail; returns (its error, its output as the user saw it)."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        try:
            ip.run_cell(cell, store_history=store_history)
        except BaseException as exc:  # noqa: BLE001 - the cell's error is what the test looks at
            error = exc
        else:
            raise AssertionError(f"the cell did not fail: {cell!r}")
    return error, captured.stdout + captured.stderr


def pytest_collection_finish(session):
    """Build llama.cpp's llama-server and rpc-server (once, then cached) before the tests marked
    ``llama_cpp_tools`` run: a cold build takes minutes, longer than one test's timeout."""
    if any(item.get_closest_marker("llama_cpp_tools") for item in session.items):
        from llama_server import llama_cpp_tools

        llama_cpp_tools()


def interrupt_after(n_tokens: int, timeout: float = 60.0) -> threading.Thread:
    """Ctrl-C (SIGINT to the main thread) once a running request has streamed ``n_tokens``."""

    def watch():
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(r.progress().n_tokens >= n_tokens for r in runtime.get().requests()):
                _thread.interrupt_main()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
