"""A local model's chat side: its chat template (compiled once with the model's own BOS and EOS
text), the stop strings of the template's end-of-turn markers, and its thinking markers (whose
special tokens an answer shows as text, so that the thinking can be split off)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..chat_templates import ChatTemplate, template_id
from ..prompts import TurnLike, chat_messages
from ..thinking import ThinkingTags, find_tags, tags_from_option
from . import llama_private as private

if TYPE_CHECKING:
    from ..specs import ModelSpec

# end-of-turn markers: text stops where a template writes one (none may leak into an answer)
END_OF_TURN = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<turn|>",
    "<|end|>",
    "<|return|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|END_OF_TURN_TOKEN|>",
    "<｜end▁of▁sentence｜>",
)


def end_of_turn_stops(template: str, eos: str, tags: ThinkingTags | None) -> list[str]:
    """Stop strings of a chat template: its EOS and the end-of-turn markers it writes (a thinking
    marker, such as gpt-oss's ``<|end|>`` after its analysis, is not a stop)."""
    markers = set(tags.tokens) if tags is not None else set()
    stops = [eos] if eos else []
    stops += [m for m in END_OF_TURN if m in template and m != eos]
    return [s for s in stops if s not in markers]


def thinking_of(llm: Any, spec: ModelSpec, template: str | None) -> tuple[ThinkingTags | None, frozenset[int]]:
    """The thinking markers (the alias's ``thinking_tags``, else the template's or the tokenizer's;
    a model without a chat template has none) and the special tokens that spell them."""
    if spec.thinking_tags is not None:
        tags = tags_from_option(list(spec.thinking_tags), f"model {spec.display_name!r}: ")
    elif template and spec.chat != "completion":

        def one_token(text: str) -> bool:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) == 1

        tags = find_tags(template, one_token)
    else:
        tags = None
    if tags is None:
        return None, frozenset()
    shown = {
        t
        for marker in tags.tokens
        for t in llm.tokenize(marker.encode("utf-8"), add_bos=False, special=True)
        if not llm.detokenize([t], special=False)  # a control token: rendered as nothing unless asked
    }
    return tags, frozenset(shown)


class ChatSide:
    """Renders chat prompts for one loaded model; the template compiles at the first one."""

    def __init__(self, llm: Any, spec: ModelSpec, source: str | None, tags: ThinkingTags | None):
        self.llm, self.spec, self.source, self.tags = llm, spec, source, tags
        self.template: ChatTemplate | None = None
        self.bos_text = ""
        self.stops: list[str] = []

    @property
    def name(self) -> str | None:
        """Which chat template the model uses: its family and a short hash (None: no template)."""
        return template_id(self.source) if self.source and self.spec.chat != "completion" else None

    def compiled(self) -> ChatTemplate:
        if self.template is None:
            llm = self.llm
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            eos = private.token_text(llm, eos_id) if eos_id != -1 else ""
            self.bos_text = private.token_text(llm, bos_id) if bos_id != -1 else ""
            self.template = ChatTemplate(
                self.source or "", bos_token=self.bos_text, eos_token=eos, model=self.spec.display_name
            )
            self.stops = end_of_turn_stops(self.template.source, eos, self.tags)
        return self.template

    def render(
        self, turns: list[TurnLike], prompt: str, system: str | None, think: bool | None
    ) -> tuple[str, list[str], bool]:
        """The prompt text, its stop strings, and whether a BOS token may go in front (not when the
        template already wrote it)."""
        text = self.compiled().render(chat_messages(turns, prompt, system), think=think)
        bos = self.bos_text
        return text, list(self.stops), not (bos and text.startswith(bos))

    def can_switch_thinking(self) -> bool:
        return self.template is not None and self.template.think_switch is not None
