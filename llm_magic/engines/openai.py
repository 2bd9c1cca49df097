"""Remote engine: an existing OpenAI-compatible server (llama.cpp's llama-server,
``python -m llama_cpp.server``, Ollama, vLLM). We talk to it with the official ``openai`` client
(the ``remote`` extra); we never run a server of our own.

``RemoteModel`` implements ``base.Engine``. Streaming goes over ``/v1/chat/completions`` (or
``/v1/completions`` when the spec says ``"endpoint": "completions"``); images go as OpenAI
vision message parts. Stop and timeouts close the HTTP stream, so the server stops too.
The API key is read from the environment variable the spec names and is never shown anywhere.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, LLMMagicError, ModelLoadError
from ..prompts import QA_STOP, TurnLike, chat_messages, image_messages, qa_text, raw_text
from ..thinking import THINK, Thinking
from .base import Prepared, StreamStats
from .stops import stop_list

if TYPE_CHECKING:
    from ..conversation import Conversation
    from ..images import Image
    from ..specs import ModelSpec

CONNECT_TIMEOUT_S = 10.0


class RemoteError(LLMMagicError, RuntimeError):
    """The server refused, failed or broke the stream; the message names the server."""

    user_error = True


_OPENAI_SAMPLING = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")  # standard parameters


def _client_module() -> Any:
    try:
        import openai
    except ImportError:
        raise ModelLoadError("remote models need the openai client: pip install 'llm-magic[remote]'") from None
    return openai


def _http_timeout(openai: Any, total: float, connect: float) -> Any:
    """A timeout of the HTTP library this openai client is built on (httpx; httpx2 in newer SDKs,
    which re-export theirs as ``openai.Timeout``)."""
    timeout = getattr(openai, "Timeout", None) or importlib.import_module("httpx").Timeout
    return timeout(total, connect=connect)


def _transport_errors(openai: Any) -> tuple[type[BaseException], ...]:
    """A connection that broke: the client's own error, and the transport errors of whichever HTTP
    library is installed (a mid-stream failure surfaces as the library's, not the client's)."""
    errors: list[type[BaseException]] = [openai.APIConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return chain


def describe_connection_error(exc: BaseException) -> str:
    """Connection refused, DNS failure, timeout... in words (never with headers or keys)."""
    for e in _cause_chain(exc):
        if (
            isinstance(e, socket.gaierror)
            or "Name or service not known" in str(e)
            or "nodename nor servname" in str(e)
            or "Temporary failure in name resolution" in str(e)
        ):
            return "cannot resolve the host name (DNS failure)"
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e) or "[Errno 111]" in str(e):
            return "connection refused (is the server running, on this port?)"
    for e in _cause_chain(exc):
        if isinstance(e, (TimeoutError, socket.timeout)) or "timed out" in str(e).lower():
            return "the connection timed out"
    return "cannot connect"


class RemoteModel:
    """A model served by an OpenAI-compatible server (``kind`` "remote")."""

    def __init__(self, spec: ModelSpec, client: Any, model_name: str, server_models: list[str], latency_s: float):
        self.spec: ModelSpec = spec
        self.kind: str = "remote"
        self.concurrency: int = 16  # the server does its own scheduling
        self.client: Any = client  # openai.OpenAI
        self.model_name = model_name  # the server's name for the model
        self.server_models = server_models  # what GET /models listed
        self.latency_s = latency_s  # how long GET /models took
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- loading: check the server, record latency and its models --------------------------

    @classmethod
    def load(cls, spec: ModelSpec, abort: threading.Event | None = None) -> RemoteModel:
        openai = _client_module()
        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ModelLoadError(
                    f"{spec.display_name}: the environment variable {spec.api_key_env} (api_key_env) is not set"
                )
        client = openai.OpenAI(
            base_url=spec.base_url,
            api_key=key or "not-needed",
            max_retries=0,
            timeout=_http_timeout(openai, 60.0, CONNECT_TIMEOUT_S),
        )
        where = f"{spec.display_name} ({spec.base_url})"
        started = time.monotonic()
        try:
            listed = [m.id for m in client.models.list()]
        except openai.APIConnectionError as e:
            raise ModelLoadError(f"{where}: {describe_connection_error(e)}") from None
        except openai.APIStatusError as e:
            raise ModelLoadError(f"{where}: {status_message(e, spec)}") from None
        except Exception as e:  # noqa: BLE001 - a server that is not OpenAI-compatible fails in any way
            raise ModelLoadError(f"{where}: GET /models failed: {type(e).__name__}") from None
        latency = time.monotonic() - started
        name = spec.remote_model or (listed[0] if listed else "")
        if listed and name not in listed:
            raise ModelLoadError(f"{where}: unknown model {name!r}; the server has: {', '.join(listed)}")
        return cls(spec, client, name, listed, latency)

    # ---- prompting ------------------------------------------------------------------------

    def prepare(
        self,
        prompt: str,
        *,
        raw: bool = False,
        system: str | None = None,
        conversation: Conversation | None = None,
        max_tokens: int = 0,
        images: Sequence[Image] | None = None,
        think: bool | None = None,  # the server's chat template decides (not switched from here)
    ) -> Prepared:
        """Chat messages (with image parts when there are images), or the prompt text for
        ``--raw`` and the completions endpoint. The server applies its own chat template."""
        self._check_open()
        if conversation is not None and system is None:
            system = conversation.system
        turns: list[TurnLike] = list(conversation.turns) if conversation is not None else []
        if images:
            if self.spec.endpoint == "completions":
                raise ConfigError(
                    f"{self.spec.display_name} uses the completions endpoint, which takes no "
                    f'images; use "endpoint": "chat" for a vision model'
                )
            return Prepared(
                "vision",
                messages=image_messages(turns, prompt, system, images),
                turns_used=len(turns),
                system=system,
            )
        if raw:
            text = raw_text(turns, prompt)
            return Prepared("raw", text=text, turns_used=len(turns), system=system)
        if self.spec.endpoint == "completions":
            text = qa_text(turns, prompt, system)
            return Prepared("completion", text=text, stop=list(QA_STOP), turns_used=len(turns), system=system)
        messages = chat_messages(turns, prompt, system)
        # a server without a reasoning parser passes <think>…</think> through as text: split it off
        return Prepared("chat", messages=messages, turns_used=len(turns), system=system, thinking=THINK)

    # ---- generation -----------------------------------------------------------------------

    def stream(
        self,
        prepared: Prepared,
        *,
        max_tokens: int,
        should_stop: Callable[[], bool],
        stats: StreamStats,
        deadline: float | None = None,
        **sampling: Any,
    ) -> Generator[str, None, None]:
        """Yield text as the server streams it. Stop/timeout close the HTTP stream.

        A connection error or a 5xx before the first token is retried once; after the first
        token never (that would duplicate text)."""
        self._check_open()
        openai = _client_module()
        transport_errors = _transport_errors(openai)
        where = f"{self.spec.display_name} ({self.spec.base_url})"
        stop = stop_list(prepared.stop, sampling.pop("stop", None))
        extra = {k: sampling.pop(k) for k in ("top_k", "repeat_penalty", "min_p") if sampling.get(k) is not None}
        grammar = sampling.pop("grammar", None)
        if isinstance(grammar, str):
            extra["grammar"] = grammar
        params: dict[str, Any] = {k: v for k, v in sampling.items() if v is not None and k in _OPENAI_SAMPLING}
        if params.get("seed") is not None and params["seed"] < 0:
            params.pop("seed")
        # include_usage: llama-server (like OpenAI, vLLM, Ollama) sends the token counts only when asked
        params.update(model=self.model_name, max_tokens=max_tokens, stream=True, stream_options={"include_usage": True})
        if stop:
            params["stop"] = stop[:4]  # the OpenAI API takes at most 4
        if extra:
            params["extra_body"] = extra
        chat = prepared.messages is not None
        got_first = False
        n_chunks = 0
        for attempt in (1, 2):
            remaining = None if deadline is None else max(0.05, deadline - time.monotonic())
            timeout = _http_timeout(openai, remaining or 600.0, min(CONNECT_TIMEOUT_S, remaining or CONNECT_TIMEOUT_S))
            try:
                if chat:
                    response = self.client.chat.completions.create(
                        messages=prepared.messages, timeout=timeout, **params
                    )
                else:
                    response = self.client.completions.create(prompt=prepared.text, timeout=timeout, **params)
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
                raise RemoteError(f"{where}: {status_message(e, self.spec, self.server_models)}") from None
            stats.cancel = response.close  # Stop from another thread closes the HTTP stream at once
            try:
                for chunk in response:
                    if stats.first_sample_at is None:
                        stats.first_sample_at = time.monotonic()
                    _read_counts(chunk, stats)
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    piece = choice.delta.content if chat else choice.text
                    if choice.finish_reason:
                        stats.finish_reason = "length" if choice.finish_reason == "length" else "stop"
                    for text in (_reasoning(choice.delta) if chat else None, piece):
                        if text:
                            got_first = True
                            n_chunks += 1
                            stats.n_tokens = max(stats.n_tokens, n_chunks)  # live, for progress()
                            yield text
                    if should_stop():
                        return
            except Exception as e:  # noqa: BLE001 - mid-stream failures of any kind: keep the partial text
                if should_stop():
                    return  # our own close() during Stop/timeout
                if isinstance(e, openai.APIStatusError):
                    raise RemoteError(f"{where}: {status_message(e, self.spec, self.server_models)}") from None
                if isinstance(e, openai.APIError) and not isinstance(e, openai.APIConnectionError):
                    # an `error` event in the stream: how llama-server reports a request that fails once streaming began
                    raise RemoteError(f"{where}: the server reported an error: {_one_line(e.message)}") from None
                if not got_first and attempt == 1 and isinstance(e, transport_errors):
                    continue
                if isinstance(e, transport_errors):
                    raise RemoteError(f"{where}: the server broke off the stream ({type(e).__name__})") from None
                raise RemoteError(
                    f"{where}: malformed stream from the server ({type(e).__name__}: {str(e)[:120]})"
                ) from None
            finally:
                stats.cancel = None
                response.close()
            if not got_first and stats.finish_reason is None and not should_stop():
                # llama_cpp.server answers 200 and an empty stream when the request fails in its generator
                raise RemoteError(
                    f"{where}: the server ended the stream without an answer "
                    "(a prompt longer than its context? the server's log says why)"
                )
            if not stats.n_tokens:
                stats.n_tokens = n_chunks  # the server sent no usage: one chunk per token
            stats.finish_reason = stats.finish_reason or "stop"
            return

    # ---- the rest of the Engine protocol -----------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "server_models": list(self.server_models)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing is best effort: the server forgets us anyway
                pass

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.display_name} was unloaded")


def _read_counts(chunk: Any, stats: StreamStats) -> None:
    """Token counts a chunk carries: OpenAI's ``usage`` (on its own last chunk, or beside the choices), and
    llama-server's ``timings`` (``prompt_n``: the prompt tokens it evaluated, not reused from its cache)."""
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        if isinstance(getattr(usage, "completion_tokens", None), int):
            stats.n_tokens = usage.completion_tokens
        if isinstance(getattr(usage, "prompt_tokens", None), int):
            stats.n_prompt_tokens = usage.prompt_tokens
    timings = getattr(chunk, "timings", None)
    if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
        stats.n_prompt_evaluated = timings["prompt_n"]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:200]


def _reasoning(delta: Any) -> Thinking | None:
    """The reasoning a server sends apart from the answer (llama-server's ``reasoning_content``,
    vLLM's and others' ``reasoning``), as a ``Thinking`` piece."""
    text = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
    return Thinking(text) if isinstance(text, str) and text else None


def status_message(e: Any, spec: ModelSpec, available: list[str] | None = None) -> str:
    """A one-line message for an HTTP error status (no headers, no key)."""
    code = getattr(e, "status_code", None)
    if code in (401, 403):
        hint = (
            f"check the key in ${spec.api_key_env}"
            if spec.api_key_env
            else "the server wants an API key: set api_key_env in the model spec"
        )
        return f"{code} {'Unauthorized' if code == 401 else 'Forbidden'}: {hint}"
    if code == 404:
        if available is None:
            return "404 Not Found (is base_url right? it usually ends in /v1)"
        return f"404: unknown model {spec.remote_model!r}; the server has: {', '.join(available) or 'no models'}"
    if code is not None and code >= 500:
        return f"server error {code}"
    body = getattr(e, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    return f"the server refused the request ({code}{': ' + _one_line(detail) if detail else ''})"
