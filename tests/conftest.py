"""Shared fixtures: tiny real GGUF models, a real InteractiveShell, global state reset per test."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_gguf import CHATML_TEMPLATE, write_corrupt_files, write_tiny_model  # noqa: E402

import llm_magic  # noqa: E402
from llm_magic import config  # noqa: E402


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
def _fresh_state(monkeypatch, _shell):
    """Every test starts with no models, default settings and no default model from the env."""
    from traitlets.config import Config

    monkeypatch.delenv(config.ENV_MODEL, raising=False)
    config.settings = config.Settings()
    _shell.config.AskMagics = Config()  # %config lines of earlier tests don't leak
    yield
    llm_magic.cleanup_models()
    config.settings = config.Settings()


@pytest.fixture
def use_model(monkeypatch, tiny_model):
    """Make the tiny model the default model, as $LLM_MAGIC_MODEL would."""
    monkeypatch.setenv(config.ENV_MODEL, tiny_model)
    return tiny_model


@pytest.fixture(scope="session")
def _shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    cfg = Config()
    cfg.HistoryManager.enabled = False
    return InteractiveShell.instance(config=cfg)


@pytest.fixture
def ip(_shell, use_model):
    """A real InteractiveShell with llm_magic loaded (preloading the tiny model)."""
    _shell.run_line_magic("load_ext", "llm_magic")
    yield _shell
    _shell.run_line_magic("unload_ext", "llm_magic")
    for name in [n for n in _shell.user_ns if not n.startswith("_") and n not in ("In", "Out", "exit", "quit", "get_ipython")]:
        _shell.user_ns.pop(name, None)


@pytest.fixture
def ip_default(_shell):
    """The shell with llm_magic loaded and nothing configured: the default model (Gemma 3 270M)."""
    _shell.run_line_magic("load_ext", "llm_magic")
    yield _shell
    _shell.run_line_magic("unload_ext", "llm_magic")


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
    """Run a cell in the shell, capturing stdout; returns (result, stdout)."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        result = ip.run_cell(cell, store_history=store_history)
    return result, captured.stdout + captured.stderr


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
