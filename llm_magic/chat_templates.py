"""A GGUF's Jinja chat template, rendered by us in a sandbox: prompt text for chat messages.

llama.cpp's templates (and the Hugging Face ones they come from) are Jinja programs written for
``transformers``: they call ``raise_exception`` and ``strftime_now``, use ``tojson`` with its
``ensure_ascii``/``indent`` arguments, namespaces and ``{% break %}``/``{% continue %}``. They run
here in ``jinja2.sandbox.ImmutableSandboxedEnvironment`` (no attribute of Python internals, no
mutation of what we pass in) with ``trim_blocks``/``lstrip_blocks``, as ``transformers`` does.

What a template can do is read from the template itself, as llama.cpp's server does:
``system_role`` (a system message it renders; otherwise the system prompt is merged into the first
user turn, with a newline), ``think_switch`` (the variable that turns reasoning on or off, e.g.
Qwen3's ``enable_thinking``). A template that raises, for a system prompt or anything else, is a
``ChatTemplateError`` naming the model and the template's own message.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from .errors import LLMMagicError

# variables a template reads to switch reasoning on or off (first found wins)
THINK_SWITCHES = ("enable_thinking", "thinking", "enable_reasoning", "reasoning")

# well-known template families: (name, marker all of which the source contains); first match wins
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gpt-oss", ("<|channel|>", "<|start|>")),
    ("gemma4", ("<|turn>",)),
    ("gemma", ("<start_of_turn>",)),
    ("llama3", ("<|start_header_id|>",)),
    ("deepseek", ("<｜Assistant｜>",)),
    ("command-r", ("<|START_OF_TURN_TOKEN|>",)),
    ("phi3", ("<|assistant|>", "<|end|>")),
    ("mistral", ("[INST]",)),
    ("granite", ("<|start_of_role|>",)),
    ("qwen3", ("<|im_start|>", "<think>")),
    ("chatml", ("<|im_start|>",)),
)

_SYSTEM_PROBE = "llm-magic-system-probe"
_USER_PROBE = "llm-magic-user-probe"


class ChatTemplateError(LLMMagicError, ValueError):
    """A model's chat template failed (raised, or does not compile): the message names the model
    and says what the template said."""

    user_error = True


def template_id(source: str) -> str:
    """A short, stable name of a template: its family (when recognised) and a hash of its text,
    e.g. ``qwen3 3f2a9c1d`` or ``template 0b4e77aa``."""
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:8]
    family = next((name for name, marks in _FAMILIES if all(m in source for m in marks)), "template")
    return f"{family} {digest}"


def compile_error(model: str, exc: BaseException) -> ChatTemplateError:
    """A template that does not compile, in one line naming the model."""
    line = getattr(exc, "lineno", None)
    where = f" (line {line})" if line else ""
    return ChatTemplateError(f"{model}: its chat template does not compile{where}: {getattr(exc, 'message', exc)}")


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    """``transformers``' ``tojson``: plain JSON (Jinja's own escapes HTML characters and sorts keys)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


_env: Any = None


def _extensions() -> list[Any]:
    """Jinja's loop controls, and ``{% generation %}…{% endgeneration %}`` (``transformers`` marks
    the assistant's tokens with it; rendering a prompt, it is just its body)."""
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols

    class Generation(Extension):
        tags = {"generation"}  # noqa: RUF012 - Jinja's own class attribute

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return [loopcontrols, Generation]


def _undefined() -> type:
    """Undefined that joins strings as nothing (``"x" + functions`` with no functions: ``"x"``), as
    llama.cpp's own Jinja engine does; any other use of an undefined value still raises."""
    from jinja2 import Undefined

    class Lenient(Undefined):
        def __add__(self, other: Any) -> Any:
            return other if isinstance(other, str) else Undefined.__add__(self, other)

        def __radd__(self, other: Any) -> Any:
            return other if isinstance(other, str) else Undefined.__radd__(self, other)

    return Lenient


def environment() -> Any:
    """The one sandboxed Jinja environment every chat template compiles in."""
    global _env
    if _env is None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=_extensions(), undefined=_undefined()
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        _env = env
    return _env


def _template_message(exc: BaseException) -> str:
    """The template's own words for a failure (a ``raise_exception`` message as it is)."""
    message = str(getattr(exc, "message", None) or exc).strip().splitlines()
    text = message[0] if message else type(exc).__name__
    from jinja2.exceptions import TemplateError

    return text if isinstance(exc, TemplateError) and type(exc) is TemplateError else f"{type(exc).__name__}: {text}"


class ChatTemplate:
    """One model's chat template: compiled once, rendered per prompt."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", model: str = "the model"):
        from jinja2 import meta
        from jinja2.exceptions import TemplateSyntaxError

        self.source = source
        self.bos_token, self.eos_token = bos_token, eos_token
        self.model = model
        self.id = template_id(source)
        env = environment()
        try:
            self._template = env.from_string(source)
            variables = meta.find_undeclared_variables(env.parse(source))
        except TemplateSyntaxError as e:
            raise compile_error(model, e) from None
        self.variables: frozenset[str] = frozenset(variables)
        self.think_switch: str | None = next((v for v in THINK_SWITCHES if v in self.variables), None)
        self._system_role: bool | None = None
        # where an earlier turn's reasoning goes: most templates read reasoning_content, gpt-oss thinking
        self._reasoning_key = next((k for k in ("reasoning_content", "thinking") if k in source), None)

    @property
    def system_role(self) -> bool:
        """Does the template render a system message? (llama.cpp asks the same: it renders a probe
        and looks for it; a template that raises, like Gemma 2's, has none.)"""
        if self._system_role is None:
            probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": _USER_PROBE}]
            try:
                self._system_role = _SYSTEM_PROBE in self._render(probe, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - any failure with a system message means: no system role
                self._system_role = False
        return self._system_role

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, **extra: Any) -> str:
        return str(
            self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        )

    def _reasoning(self, message: dict[str, Any]) -> dict[str, Any]:
        if "reasoning_content" not in message:
            return message
        message = dict(message)
        thinking = message.pop("reasoning_content")
        if self._reasoning_key is not None:
            message[self._reasoning_key] = thinking
        return message

    def render(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True, think: bool | None = None
    ) -> str:
        """The prompt text for OpenAI-style ``messages``. ``think`` sets the template's reasoning
        switch (when it has one; None leaves the template's default)."""
        if self._reasoning_key != "reasoning_content" and any("reasoning_content" in m for m in messages):
            messages = [self._reasoning(m) for m in messages]
        if messages and messages[0].get("role") == "system" and not self.system_role:
            messages = merge_system(messages)
        extra: dict[str, Any] = {}
        if think is not None and self.think_switch is not None:
            extra[self.think_switch] = think
        try:
            return self._render(messages, add_generation_prompt, **extra)
        except Exception as e:  # noqa: BLE001 - whatever the template raised becomes one line naming it
            raise ChatTemplateError(f"{self.model}: its chat template failed: {_template_message(e)}") from None


def merge_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system prompt put in front of the first user turn (llama.cpp's server does the same)."""
    system, rest = messages[0], [dict(m) for m in messages[1:]]
    if rest and rest[0].get("role") == "user" and isinstance(rest[0].get("content"), str):
        rest[0]["content"] = f"{system['content']}\n{rest[0]['content']}"
        return rest
    return rest or [{"role": "user", "content": system["content"]}]
