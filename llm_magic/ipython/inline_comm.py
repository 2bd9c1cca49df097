"""The kernel's end of JupyterLab's inline completions: the comm target ``llm_magic.inline``.

Registered on ``%load_ext llm_magic`` with the kernel's comm manager (nothing happens outside a
kernel, e.g. in a terminal IPython) and unregistered on unload. Each comm the frontend opens gets
an ``inline.InlineServer``: messages are handled on the thread ipykernel delivers them on (the
main shell thread, or a subshell's thread when the frontend sends them with a ``subshell_id``,
ipykernel >= 7) and return at once; the completion itself runs on a worker thread and its replies
go out with ``comm.send`` from there, in the context of the request they answer.

That context matters with subshells: ipykernel 7 sends a comm's next incoming messages to the
subshell of the parent message of its last outgoing one, and a worker thread's own parent is
whatever message the main shell last took (a cell). Sent from there, one reply would move every
later request behind the running cell.
"""

from __future__ import annotations

import contextvars
import logging
import weakref
from typing import Any

from ..inline import InlineServer

TARGET = "llm_magic.inline"
log = logging.getLogger("llm_magic.inline")
_servers: weakref.WeakSet[InlineServer] = weakref.WeakSet()
_comms: list[Any] = []  # the open comms (closed on unload)


def _manager(ipython: Any) -> Any:
    kernel = getattr(ipython, "kernel", None)
    return getattr(kernel, "comm_manager", None)


def register(ipython: Any) -> bool:
    """Register the comm target; False when this shell has no kernel (no comms)."""
    manager = _manager(ipython)
    if manager is None:
        return False
    manager.register_target(TARGET, _open)
    return True


def unregister(ipython: Any) -> None:
    """Unregister the target and stop every completion under way."""
    manager = _manager(ipython)
    if manager is not None and TARGET in getattr(manager, "targets", {}):
        manager.unregister_target(TARGET, _open)
    for server in list(_servers):
        server.close()
    for comm in list(_comms):
        try:
            comm.close()
        except Exception:  # the kernel may be shutting down
            log.debug("llm_magic: inline: closing a comm failed", exc_info=True)
    _comms.clear()


def _open(comm: Any, msg: dict[str, Any]) -> None:
    """A frontend opened a comm: serve its messages (a request may come with the open message)."""
    server = InlineServer(comm.send)
    _servers.add(server)
    _comms.append(comm)

    def on_msg(message: dict[str, Any]) -> None:
        server.handle(_data(message), _sender(comm))

    def on_close(message: dict[str, Any]) -> None:
        server.close()
        if comm in _comms:
            _comms.remove(comm)

    comm.on_msg(on_msg)
    comm.on_close(on_close)
    comm.server = server  # for tests and debugging: the kernel's view of this comm
    data = _data(msg)
    if data:
        server.handle(data, _sender(comm))


def _sender(comm: Any) -> Any:
    """``comm.send`` in the context of the message being handled now (its parent header and
    subshell), wherever the reply is sent from."""
    context = contextvars.copy_context()

    def send(data: dict[str, Any]) -> None:
        context.copy().run(comm.send, data)  # a copy: two threads may send at once

    return send


def _data(message: Any) -> Any:
    try:
        return message["content"]["data"]
    except (KeyError, TypeError):
        return None
