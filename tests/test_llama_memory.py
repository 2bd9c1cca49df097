"""llm_magic.engines.llama_memory: mlock planning and whether llama.cpp's extra CPU buffer types
are used (not on AMX CPUs, where they segfault; an environment variable decides instead)."""

from __future__ import annotations

import pytest

import llm_magic
from llm_magic.engines import llama_memory, llama_private


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False)])
def test_the_environment_decides_extra_buffers(monkeypatch, value, expected):
    monkeypatch.setenv("LLM_MAGIC_EXTRA_BUFTS", value)
    assert llama_memory.use_extra_buffers() is expected


def test_by_default_extra_buffers_follow_the_cpu(monkeypatch):
    monkeypatch.delenv("LLM_MAGIC_EXTRA_BUFTS", raising=False)
    assert llama_memory.use_extra_buffers() is (not llama_memory.cpu_has_amx())


def test_only_our_own_loads_change_llama_params(monkeypatch, tiny_model):
    """A ``Llama`` the user builds keeps llama.cpp's defaults; inside our load the flag applies."""
    monkeypatch.setenv("LLM_MAGIC_EXTRA_BUFTS", "0")
    llm_magic.ask("hi", model=tiny_model, max_tokens=1)  # installs the hooks
    import llama_cpp.llama_cpp as low

    assert low.llama_model_default_params().use_extra_bufts  # outside our loads: untouched
    with llama_private.abortable_load(None):
        assert not low.llama_model_default_params().use_extra_bufts
    monkeypatch.setenv("LLM_MAGIC_EXTRA_BUFTS", "1")
    with llama_private.abortable_load(None):
        assert low.llama_model_default_params().use_extra_bufts


def test_mlock_plan_says_why_not(monkeypatch):
    assert llama_memory.plan_mlock(False, 1 << 20) == (False, "off")
    monkeypatch.setattr(llama_memory, "mlock_allowed", lambda size: (False, "RLIMIT_MEMLOCK is 64 bytes"))
    assert llama_memory.plan_mlock(True, 1 << 20) == (False, "off (fallback: RLIMIT_MEMLOCK is 64 bytes)")
    monkeypatch.setattr(llama_memory, "mlock_allowed", lambda size: (True, ""))
    assert llama_memory.plan_mlock(True, 1 << 20) == (True, "on")
