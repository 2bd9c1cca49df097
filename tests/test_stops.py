"""llm_magic.engines.stops: ``stop_list``, ``find_stop`` and ``held_back`` — a stop string split
across streamed pieces is held back and never emitted, the earliest stop wins, and text already
emitted is never searched again."""

from __future__ import annotations

import random

import pytest

from llm_magic.engines.stops import find_stop, held_back, stop_list


def emit(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """What the local engine yields for ``pieces`` (the same loop as ``LocalModel.stream``):
    the emitted chunks, and whether a stop string ended the text."""
    out: list[str] = []
    text, emitted = "", 0
    for piece in pieces:
        text += piece
        cut = find_stop(text, stops, emitted)
        if cut is not None:
            if cut > emitted:
                out.append(text[emitted:cut])
            return out, True
        safe = len(text) - held_back(text, stops, emitted)
        if safe > emitted:
            out.append(text[emitted:safe])
            emitted = safe
    if emitted < len(text):
        out.append(text[emitted:])
    return out, False


# ---- stop_list ----------------------------------------------------------------------------------


def test_stop_list_joins_groups_and_drops_empty_ones():
    assert stop_list(["\nQ:"], ["END", ""], None, "", "STOP", ()) == ["\nQ:", "END", "STOP"]
    assert stop_list() == [] and stop_list(None, [], "") == []


def test_a_single_string_is_one_stop_not_its_characters():
    assert stop_list("abc") == ["abc"]
    assert stop_list(("ab", "cd")) == ["ab", "cd"]


# ---- find_stop ----------------------------------------------------------------------------------


def test_find_stop_gives_where_the_stop_starts():
    assert find_stop("hello STOP world", ["STOP"], 0) == 6
    assert find_stop("hello world", ["STOP"], 0) is None
    assert find_stop("anything", [], 0) is None


def test_the_earliest_stop_wins_whatever_its_place_in_the_list():
    text = "one END two STOP three"
    assert find_stop(text, ["STOP", "END"], 0) == 4
    assert find_stop(text, ["END", "STOP"], 0) == 4
    assert find_stop("xABCD", ["BC", "ABCD"], 0) == 1  # overlapping: the one that starts first


def test_emitted_text_is_not_searched_again():
    text = "a STOP b"
    assert find_stop(text, ["STOP"], 0) == 2
    assert find_stop(text, ["STOP"], 6) is None  # the first STOP was already emitted
    assert find_stop(text + " STOP", ["STOP"], 6) == 9  # the next one is found
    # a stop that ends in new text but starts up to len(stop) - 1 characters back is still found
    assert find_stop("xxSTOP", ["STOP"], 3) == 2


# ---- held_back ----------------------------------------------------------------------------------


def test_held_back_is_the_longest_tail_that_may_start_a_stop():
    assert held_back("hello\n", ["\nQ:"], 0) == 1
    assert held_back("hello\nQ", ["\nQ:"], 0) == 2
    assert held_back("hello\nR", ["\nQ:"], 0) == 0
    assert held_back("hello", [], 0) == 0
    assert held_back("xaa", ["ab", "aab"], 0) == 2  # the longest of several candidates
    assert held_back("xab", ["abc", "b"], 0) == 2  # a complete stop is find_stop's business


def test_held_back_never_reaches_into_emitted_text():
    assert held_back("xab", ["abc"], 1) == 2
    assert held_back("xab", ["abc"], 2) == 0  # "a" is out already: "ab" is no longer a candidate
    assert held_back("xa", ["abc"], 2) == 0  # nothing new: nothing to hold


# ---- the two together, on streamed pieces ---------------------------------------------------------


def test_a_stop_split_across_pieces_is_never_emitted():
    chunks, hit = emit(["Paris is big.", "\n", "Q", ":", " next question"], ["\nQ:"])
    assert hit and "".join(chunks) == "Paris is big."
    assert all("\n" not in c and "Q" not in c for c in chunks)


def test_a_false_start_is_released_when_it_is_not_a_stop():
    chunks, hit = emit(["one\n", "R", "two"], ["\nQ:"])
    assert not hit and "".join(chunks) == "one\nRtwo"
    assert chunks[0] == "one"  # "\n" waited for the next piece
    chunks, hit = emit(["end with \n"], ["\nQ:"])
    assert not hit and chunks == ["end with ", "\n"]  # held back, then flushed at the end


def test_without_stops_pieces_pass_through():
    chunks, hit = emit(["a", "b\n", "c"], [])
    assert chunks == ["a", "b\n", "c"] and not hit


def test_earliest_of_several_stops_across_pieces():
    chunks, hit = emit(["xx EN", "D yy STOP zz"], ["STOP", "END"])
    assert hit and "".join(chunks) == "xx "


def test_a_stop_at_the_very_start():
    chunks, hit = emit(["ST", "OP and more"], ["STOP"])
    assert hit and chunks == []


@pytest.mark.parametrize("seed", range(20))
def test_any_split_gives_the_text_up_to_the_first_stop(seed):
    rng = random.Random(seed)
    words = ["Q", ":", "\n", "A", "the", " ", "END", "EN", "D", "x", "Qu", "\nQ"]
    text = "".join(rng.choice(words) for _ in range(40))
    stops = ["\nQ:", "END"]
    cuts = sorted(rng.sample(range(1, len(text)), k=min(10, len(text) - 1)))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    chunks, hit = emit(pieces, stops)
    found = [i for s in stops if (i := text.find(s)) != -1]
    expected = text[: min(found)] if found else text
    assert "".join(chunks) == expected and hit == bool(found)
    assert all(c for c in chunks)  # never an empty chunk
