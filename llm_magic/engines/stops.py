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


class StopMatcher:
    """Cut a stream of text pieces at the first stop string, holding back only what may start one.

    Each piece is searched together with the last ``len(longest stop) - 1`` characters before it,
    never the whole answer, so a long answer costs the same per token as a short one."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self._keep = max((len(s) for s in stops), default=1) - 1
        self._tail = ""  # the last emitted characters (a stop string may begin there)
        self._pending = ""  # held back: it may be the start of a stop string
        self.hit = False

    def feed(self, piece: str) -> str:
        """The text that is safe to emit now; ``hit`` is set once a stop string is found."""
        if not self.stops:
            return piece
        if self.hit:
            return ""
        window = self._tail + self._pending + piece
        start = len(self._tail)
        cut = find_stop(window, self.stops, start)
        if cut is not None:
            self.hit, self._pending = True, ""
            return window[start:cut]
        safe = len(window) - held_back(window, self.stops, start)
        out, self._pending = window[start:safe], window[safe:]
        self._tail = (self._tail + out)[-self._keep :] if self._keep else ""
        return out

    def flush(self) -> str:
        """The held-back text, when the answer ends without a stop string."""
        out, self._pending = self._pending, ""
        return "" if self.hit else out
