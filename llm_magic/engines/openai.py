"""Remote engine: an existing OpenAI-compatible server (llama.cpp's llama-server,
``python -m llama_cpp.server``, Ollama, vLLM). We talk to it with the official ``openai`` client
(the ``remote`` extra); we never run a server of our own.

A ``RemoteModel`` has the same shape as ``LocalModel``: ``prepare``, ``stream``, ``lock``,
``close``. Streaming goes over ``/v1/chat/completions`` (or ``/v1/completions`` when the spec says
``"endpoint": "completions"``). Stop and timeouts close the HTTP stream, so the server stops too.
The API key is read from the environment variable the spec names and is never shown anywhere.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..config import ModelSpec
from ..errors import LLMMagicError, ModelLoadError
from ..conversation import QA_STOP, chat_messages, qa_text, raw_text
from .llama import StreamStats

CONNECT_TIMEOUT_S = 10.0


class RemoteError(LLMMagicError, RuntimeError):
    """The server refused, failed or broke the stream; the message names the server."""

    user_error = True


@dataclass
class RemotePrepared:
    mode: str  # "chat", "completion" or "raw"
    messages: list[dict] = field(default_factory=list)
    prompt: str = ""
    stop: list[str] = field(default_factory=list)
    turns_used: int = 0
    system: str | None = None
    text: str = ""
    tokens: list[int] = field(default_factory=list)  # unknown for a remote model


def _client_module():
    try:
        import openai
    except ImportError:
        raise ModelLoadError("remote models need the openai client: pip install 'llm-magic[remote]'") from None
    return openai


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        chain.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return chain


def describe_connection_error(exc: BaseException) -> str:
    """Connection refused, DNS failure, timeout... in words (never with headers or keys)."""
    for e in _cause_chain(exc):
        if isinstance(e, socket.gaierror) or "Name or service not known" in str(e) \
                or "nodename nor servname" in str(e) or "Temporary failure in name resolution" in str(e):
            return "cannot resolve the host name (DNS failure)"
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e) or "[Errno 111]" in str(e):
            return "connection refused (is the server running, on this port?)"
    for e in _cause_chain(exc):
        if isinstance(e, (TimeoutError, socket.timeout)) or "timed out" in str(e).lower():
            return "the connection timed out"
    return "cannot connect"


class RemoteModel:
    kind = "remote"

    def __init__(self, spec: ModelSpec, client: Any, model_name: str, available: list[str], latency_s: float):
        self.spec = spec
        self.client = client
        self.model_name = model_name
        self.available = available
        self.latency_s = latency_s
        self.lock = threading.Semaphore(16)  # the server does its own scheduling
        self.closed = False
        self.holder = None
        self.mlock = None
        self.n_ctx = None
        self.chat_template = None

    # ---- loading: check the server, record latency and its models --------------------------

    @classmethod
    def load(cls, spec: ModelSpec, abort: threading.Event | None = None) -> "RemoteModel":
        openai = _client_module()
        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ModelLoadError(f"{spec.display_name}: the environment variable {spec.api_key_env} "
                                     f"(api_key_env) is not set")
        import httpx

        client = openai.OpenAI(base_url=spec.base_url, api_key=key or "not-needed", max_retries=0,
                               timeout=httpx.Timeout(60.0, connect=CONNECT_TIMEOUT_S))
        where = f"{spec.display_name} ({spec.base_url})"
        started = time.monotonic()
        try:
            listed = [m.id for m in client.models.list()]
        except openai.APIConnectionError as e:
            raise ModelLoadError(f"{where}: {describe_connection_error(e)}") from None
        except openai.APIStatusError as e:
            raise ModelLoadError(f"{where}: {status_message(e, spec)}") from None
        except Exception as e:  # a server that is not OpenAI-compatible
            raise ModelLoadError(f"{where}: GET /models failed: {type(e).__name__}") from None
        latency = time.monotonic() - started
        name = spec.remote_model or (listed[0] if listed else "")
        if listed and name not in listed:
            raise ModelLoadError(f"{where}: unknown model {name!r}; the server has: {', '.join(listed)}")
        return cls(spec, client, name, listed, latency)

    # ---- prompting ------------------------------------------------------------------------

    def prepare(self, prompt: str, *, raw: bool = False, system: str | None = None, conversation: Any = None,
                max_tokens: int = 0) -> RemotePrepared:
        if self.closed:
            raise RuntimeError(f"{self.spec.display_name} was unloaded")
        if conversation is not None and system is None:
            system = conversation.system
        turns = list(conversation.turns) if conversation is not None else []
        if raw:
            text = raw_text(turns, prompt)
            return RemotePrepared("raw", prompt=text, turns_used=len(turns), system=system, text=text)
        if self.spec.endpoint == "completions":
            text = qa_text(turns, prompt, system)
            return RemotePrepared("completion", prompt=text, stop=list(QA_STOP), turns_used=len(turns),
                                  system=system, text=text)
        return RemotePrepared("chat", messages=chat_messages(turns, prompt, system), turns_used=len(turns),
                              system=system)

    # ---- generation -----------------------------------------------------------------------

    def stream(self, prepared: RemotePrepared, *, max_tokens: int, should_stop: Callable[[], bool],
               stats: StreamStats, deadline: float | None = None, **sampling: Any) -> Iterator[str]:
        """Yield text as the server streams it. Stop/timeout close the HTTP stream.

        A connection error or a 5xx before the first token is retried once; after the first
        token never (that would duplicate text)."""
        openai = _client_module()
        import httpx

        where = f"{self.spec.display_name} ({self.spec.base_url})"
        stop = list(prepared.stop) + list(sampling.pop("stop", None) or [])
        extra = {k: sampling.pop(k) for k in ("top_k", "repeat_penalty", "min_p") if sampling.get(k) is not None}
        grammar = sampling.pop("grammar", None)
        if isinstance(grammar, str):
            extra["grammar"] = grammar
        params: dict[str, Any] = {k: v for k, v in sampling.items() if v is not None and k in ("temperature", "top_p", "seed")}
        if params.get("seed") is not None and params["seed"] < 0:
            params.pop("seed")
        params.update(model=self.model_name, max_tokens=max_tokens, stream=True)
        if stop:
            params["stop"] = stop[:4]  # the OpenAI API takes at most 4
        if extra:
            params["extra_body"] = extra
        got_first = False
        n_chunks = 0
        for attempt in (1, 2):
            remaining = None if deadline is None else max(0.05, deadline - time.monotonic())
            timeout = httpx.Timeout(remaining or 600.0, connect=min(CONNECT_TIMEOUT_S, remaining or CONNECT_TIMEOUT_S))
            try:
                if prepared.mode == "chat":
                    response = self.client.chat.completions.create(messages=prepared.messages, timeout=timeout,
                                                                   **params)
                else:
                    response = self.client.completions.create(prompt=prepared.prompt, timeout=timeout, **params)
            except openai.APITimeoutError:
                if should_stop():
                    return
                raise RemoteError(f"{where}: no answer before the deadline") from None
            except openai.APIConnectionError as e:
                if attempt == 1 and not should_stop():
                    continue
                raise RemoteError(f"{where}: {describe_connection_error(e)}") from None
            except openai.APIStatusError as e:
                if attempt == 1 and e.status_code >= 500 and not should_stop():
                    continue
                raise RemoteError(f"{where}: {status_message(e, self.spec, self.available)}") from None
            stats.cancel = response.close  # Stop from another thread closes the HTTP stream at once
            try:
                for chunk in response:
                    if stats.first_sample_at is None:
                        stats.first_sample_at = time.monotonic()
                    if not chunk.choices:
                        if getattr(chunk, "usage", None) is not None:
                            stats.n_tokens = chunk.usage.completion_tokens
                            stats.n_prompt_tokens = chunk.usage.prompt_tokens
                        continue
                    choice = chunk.choices[0]
                    piece = choice.delta.content if prepared.mode == "chat" else choice.text
                    if choice.finish_reason:
                        stats.finish_reason = "length" if choice.finish_reason == "length" else "stop"
                    if piece:
                        got_first = True
                        n_chunks += 1
                        yield piece
                    if should_stop():
                        return
            except Exception as e:  # noqa: BLE001 - mid-stream failures: keep the partial text
                if should_stop():
                    return  # our own close() during Stop/timeout
                if isinstance(e, openai.APIStatusError):
                    raise RemoteError(f"{where}: {status_message(e, self.spec, self.available)}") from None
                if not got_first and attempt == 1 and isinstance(e, (openai.APIConnectionError, httpx.TransportError)):
                    continue
                if isinstance(e, (httpx.TransportError, openai.APIConnectionError)):
                    raise RemoteError(f"{where}: the server broke off the stream ({type(e).__name__})") from None
                raise RemoteError(f"{where}: malformed stream from the server ({type(e).__name__}: "
                                  f"{str(e)[:120]})") from None
            finally:
                stats.cancel = None
                response.close()
            if not stats.n_tokens:
                stats.n_tokens = n_chunks  # the server sent no usage: one chunk per token
            stats.finish_reason = stats.finish_reason or "stop"
            return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass


def status_message(e: Any, spec: ModelSpec, available: list[str] | None = None) -> str:
    """A one-line message for an HTTP error status (no headers, no key)."""
    code = getattr(e, "status_code", None)
    if code in (401, 403):
        hint = (f"check the key in ${spec.api_key_env}" if spec.api_key_env
                else "the server wants an API key: set api_key_env in the model spec")
        return f"{code} {'Unauthorized' if code == 401 else 'Forbidden'}: {hint}"
    if code == 404:
        if available is None:
            return "404 Not Found (is base_url right? it usually ends in /v1)"
        return f"404: unknown model {spec.remote_model!r}; the server has: {', '.join(available) or 'no models'}"
    if code is not None and code >= 500:
        return f"server error {code}"
    body = getattr(e, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    return f"the server refused the request ({code}{': ' + str(detail)[:200] if detail else ''})"


def load(spec: ModelSpec, abort: threading.Event | None = None) -> RemoteModel:
    return RemoteModel.load(spec, abort=abort)
