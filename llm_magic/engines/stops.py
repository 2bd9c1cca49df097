"""Stop strings, matched on the streamed text rather than by llama-cpp-python, so that the token
count stays exact: text that may be the start of a stop string is held back until it is not."""

from __future__ import annotations

from collections.abc import Iterable


def stop_list(*groups: Iterable[str] | str | None) -> list[str]:
    """The non-empty stop strings of several groups (a single string counts as one)."""
    stops: list[str] = []
    for group in groups:
        if group:
            stops += [group] if isinstance(group, str) else [s for s in group if s]
    return stops


def find_stop(text: str, stops: list[str], emitted: int) -> int | None:
    """Index where the earliest stop string starts, searching only text not yet emitted."""
    found = [i for s in stops if (i := text.find(s, max(0, emitted - len(s) + 1))) != -1]
    return min(found) if found else None


def held_back(text: str, stops: list[str], emitted: int) -> int:
    """Length of the longest tail of ``text`` that could be the start of a stop string."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text) - emitted), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest
