"""Plain-Python use imports no front end; the package's public names are where the docs say."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_plain_python_ask_imports_no_front_end(tiny_model):
    modules = _modules_after(
        "import llm_magic\n"
        f"a = llm_magic.ask('hello', model={tiny_model!r}, max_tokens=4)\n"
        f"s = llm_magic.stream('hello', model={tiny_model!r}, max_tokens=4)\n"
        "assert ''.join(s) == s.answer and a.n_tokens == 4\n"
        "llm_magic.models(); llm_magic.cleanup_models()\n"
    )
    assert "llama_cpp" in modules  # it really ran the engine
    front_ends = sorted(m for m in modules if m.split(".")[0] in ("IPython", "ipykernel", "ipywidgets"))
    assert front_ends == [], f"plain-Python use imported {front_ends}"


def test_documented_import_places():
    import llm_magic
    from llm_magic.ask_panel import AskPanel

    assert llm_magic.AskPanel is AskPanel
    assert callable(llm_magic.panel) and not isinstance(llm_magic.panel, type(llm_magic))
    assert llm_magic.__version__ == __import__("importlib.metadata").metadata.version("llm-magic")
