"""llm_magic.prompts: the prompt shapes every engine shares — ``raw_text`` (``--raw``), ``qa_text``
(the Q/A completion prompt: system line, earlier turns, the question) and ``chat_messages``
(OpenAI-style messages: system, turns, a content override)."""

from __future__ import annotations

from llm_magic.conversation import Turn
from llm_magic.engines.stops import find_stop
from llm_magic.prompts import QA_STOP, QA_TEMPLATE, chat_messages, image_messages, qa_text, raw_text

TURNS = [Turn("What is 2+2? ", " 4", "stop"), Turn("\nAnd 3+3?", " 6.", "length")]


# ---- raw_text -----------------------------------------------------------------------------------


def test_raw_text_is_the_prompt_as_it_is():
    assert raw_text([], "  Once upon a time") == "  Once upon a time"


def test_raw_text_concatenates_earlier_turns_unchanged():
    assert raw_text(TURNS, " then") == "What is 2+2?  4\nAnd 3+3? 6. then"


# ---- qa_text ------------------------------------------------------------------------------------


def test_qa_text_of_a_single_question():
    assert qa_text([], "  What is the capital of France?\n", None) == "Q: What is the capital of France?\nA:"
    assert qa_text([], "x", None) == QA_TEMPLATE.format(prompt="x")


def test_qa_text_puts_the_system_line_first():
    assert qa_text([], "Hi", "  Be brief.\n") == "Be brief.\n\nQ: Hi\nA:"
    assert qa_text([], "Hi", "") == "Q: Hi\nA:"  # an empty system prompt adds nothing


def test_qa_text_replays_earlier_turns():
    assert qa_text(TURNS, "And 4+4?", "Math.") == (
        "Math.\n\nQ: What is 2+2?\nA: 4\nQ: And 3+3?\nA: 6.\nQ: And 4+4?\nA:"
    )  # questions are stripped, answers kept as the model wrote them


def test_the_qa_stop_ends_an_answer_before_the_next_question():
    continuation = " Paris.\nQ: What is the capital of Spain?"
    cut = find_stop(continuation, QA_STOP, 0)
    assert continuation[:cut] == " Paris."


# ---- chat_messages ------------------------------------------------------------------------------


def test_chat_messages_of_a_single_prompt():
    assert chat_messages([], "Hello", None) == [{"role": "user", "content": "Hello"}]
    assert chat_messages([], "Hello", "") == [{"role": "user", "content": "Hello"}]


def test_chat_messages_with_a_system_prompt_and_turns():
    assert chat_messages(TURNS, "And 4+4?", "Math.") == [
        {"role": "system", "content": "Math."},
        {"role": "user", "content": "What is 2+2? "},
        {"role": "assistant", "content": " 4"},
        {"role": "user", "content": "\nAnd 3+3?"},
        {"role": "assistant", "content": " 6."},
        {"role": "user", "content": "And 4+4?"},
    ]


def test_content_overrides_the_last_messages_content():
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:..."}}]
    messages = chat_messages(TURNS[:1], "What is this?", None, content=parts)
    assert messages[-1] == {"role": "user", "content": parts}
    assert messages[0] == {"role": "user", "content": "What is 2+2? "}  # earlier turns stay text
    assert chat_messages([], "p", None, content="")[-1]["content"] == ""  # only None means "use the prompt"


def test_chat_messages_returns_a_fresh_list_each_time():
    a = chat_messages(TURNS, "q", "s")
    a.append({"role": "user", "content": "more"})
    assert len(chat_messages(TURNS, "q", "s")) == 6


def test_vision_messages_carry_the_images():
    from llm_magic.images import Image

    image = Image(data=b"\x89PNG\r\n\x1a\nxx", mime="image/png", source="x")
    messages = image_messages([], "What is it?", "Be brief.", [image, image])
    assert [m["role"] for m in messages] == ["system", "user"]
    parts = messages[-1]["content"]
    assert parts[0] == {"type": "text", "text": "What is it?"}
    assert [p["image_url"]["url"] for p in parts[1:]] == [image.data_uri()] * 2
    assert image.data_uri().startswith("data:image/png;base64,")
