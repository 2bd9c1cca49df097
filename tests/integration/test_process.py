"""llm_magic.engines (llama_private, llama_memory) in processes of their own: quiet native logs, mlock refused,
an unreadable model file (without the capabilities that let root read it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys, logging
import llm_magic
a = llm_magic.ask("hello", model=sys.argv[1], max_tokens=20)
print("FINISH", a.finish_reason, a.n_tokens)
print("MLOCK", llm_magic.models()[0]["mlock"])
b = llm_magic.ask("again", model=sys.argv[1], max_tokens=5)
print("FINISH", b.finish_reason, b.n_tokens)
"""


def _run(args, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs
    )


def test_native_logging_stays_quiet(tiny_model, chat_model):
    for model in (tiny_model, chat_model):
        proc = _run([model])
        assert proc.returncode == 0, proc.stderr
        assert "FINISH length 20" in proc.stdout
        assert proc.stderr == ""  # nothing from llama.cpp or llama-cpp-python


def _drop_ipc_lock_and_limit():
    """In the child: a 64 KB RLIMIT_MEMLOCK and no CAP_IPC_LOCK (which would ignore the limit)."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_CAPBSET_DROP, CAP_IPC_LOCK = 24, 14
        if libc.prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_mlock_refused_falls_back_and_warns_once(tiny_model):
    proc = _run([tiny_model], preexec_fn=_drop_ipc_lock_and_limit)
    if proc.returncode != 0 and "prctl" in proc.stderr:
        pytest.skip("cannot drop CAP_IPC_LOCK here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("FINISH length") == 2
    assert "MLOCK off (fallback: RLIMIT_MEMLOCK is 65536 bytes" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "without mlock" in line]
    assert len(warnings) == 1, proc.stderr


def test_llama_cpp_refusing_mlock_is_detected(tiny_model):
    """Even when our own check lets mlock through, llama.cpp's 'failed to mlock' is caught."""
    code = SCRIPT.replace(
        "import llm_magic",
        "import llm_magic\nimport llm_magic.engines.llama_memory as m\nm.mlock_allowed = lambda size: (True, '')",
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, tiny_model],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        preexec_fn=_drop_ipc_lock_and_limit,
    )
    if proc.returncode != 0 and "prctl" in proc.stderr:
        pytest.skip("cannot drop CAP_IPC_LOCK here")
    assert proc.returncode == 0, proc.stderr
    assert "MLOCK off (fallback: the OS refused mlock)" in proc.stdout
    assert proc.stdout.count("FINISH length") == 2


def test_unreadable_model_file(tiny_model, tmp_path):
    """As root, file permissions are not enforced: drop CAP_DAC_OVERRIDE/READ_SEARCH in a child."""
    path = tmp_path / "secret.gguf"
    shutil.copy(tiny_model, path)
    os.chmod(path, 0)
    os.chmod(tmp_path, 0o755)
    code = (
        "import llm_magic, sys\n"
        "try:\n    llm_magic.ask('x', model=sys.argv[1])\n"
        "except llm_magic.ModelLoadError as e:\n    print('ERROR', e)\n"
        "print('OTHER', llm_magic.ask('x', model=sys.argv[2], max_tokens=2).n_tokens)\n"
    )

    def drop_caps():
        import ctypes

        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                if libc.prctl(24, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl")

    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), tiny_model],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        preexec_fn=drop_caps,
    )
    if "prctl" in proc.stderr:
        pytest.skip("cannot drop capabilities here")
    assert proc.returncode == 0, proc.stderr
    assert "ERROR cannot read" in proc.stdout and "Permission denied" in proc.stdout
    assert "OTHER 2" in proc.stdout
