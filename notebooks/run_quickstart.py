"""Execute notebooks/quickstart.ipynb headless in a real kernel, printing the streamed answers as
they arrive (what `make demo` shows). Also imported by the tests to check the streaming.

    python notebooks/run_quickstart.py [--model PATH] [--output executed.ipynb]

Without --model it uses $LLM_MAGIC_MODEL, else the embedded default model (Gemma 3 270M), which
is assembled into the user cache directory once and verified by sha256.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


class StreamingClient(NotebookClient):
    """A NotebookClient that echoes outputs as the kernel sends them and counts display updates."""

    def __init__(self, *args, echo: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.echo = echo
        self.updates: dict[int, int] = {}  # cell index -> update_display_data messages
        self.first_output_at: dict[int, float] = {}
        self.cell_started: dict[int, float] = {}
        self._shown: dict[str, str] = {}

    def _write(self, text: str) -> None:
        if self.echo:
            sys.stdout.write(text)
            sys.stdout.flush()

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == "code":
            self.cell_started[cell_index] = time.monotonic()
            self._write(f"\n\033[1mIn [{cell_index}]:\033[0m {cell.source}\n")
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    def process_message(self, msg, cell, cell_index):
        kind = msg["msg_type"]
        content = msg.get("content", {})
        if kind in ("display_data", "update_display_data", "stream", "execute_result", "error"):
            self.first_output_at.setdefault(cell_index, time.monotonic())
        if kind == "update_display_data":
            self.updates[cell_index] = self.updates.get(cell_index, 0) + 1
        if kind in ("display_data", "update_display_data"):
            display_id = (content.get("transient") or {}).get("display_id", "")
            text = content.get("data", {}).get("text/plain", "").replace("▌", "")
            before = self._shown.get(display_id, "")
            if text.startswith(before):
                self._write(text[len(before) :])
            else:
                self._write("\n" + text)
            self._shown[display_id] = text
        elif kind == "stream":
            self._write(content.get("text", ""))
        elif kind == "execute_result":
            self._write(content.get("data", {}).get("text/plain", "") + "\n")
        elif kind == "error":
            self._write(f"{content.get('ename')}: {content.get('evalue')}\n")
        return super().process_message(msg, cell, cell_index)


def run(
    notebook: Path = HERE / "quickstart.ipynb",
    model: str | None = None,
    echo: bool = True,
    timeout: int = 600,
    setup: str = "",
) -> tuple[nbformat.NotebookNode, StreamingClient]:
    """Execute ``notebook`` in a real kernel; ``setup`` is Python run first, in the first code cell."""
    nb = nbformat.read(notebook, as_version=4)
    if setup:
        first = next(c for c in nb.cells if c.cell_type == "code")
        first.source = setup.rstrip("\n") + "\n" + first.source
    env = dict(os.environ)
    if model:
        env["LLM_MAGIC_MODEL"] = str(model)
    client = StreamingClient(
        nb, echo=echo, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    )
    old_env = os.environ.copy()
    os.environ.update(env)  # the kernel inherits our environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    return nb, client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF path (default: $LLM_MAGIC_MODEL or the embedded Gemma 3 270M)")
    parser.add_argument("--output", help="write the executed notebook here")
    args = parser.parse_args()
    model = args.model or os.environ.get("LLM_MAGIC_MODEL")
    if not model:
        from llm_magic import default_model

        t0 = time.monotonic()
        path = default_model.ensure(verify=True)
        print(f"default model: {path} (sha256 verified, {time.monotonic() - t0:.1f} s)")
    nb, client = run(model=model)
    print()
    if args.output:
        nbformat.write(nb, args.output)
    for i in sorted(client.updates):
        print(f"cell {i}: {client.updates[i]} display updates while streaming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
