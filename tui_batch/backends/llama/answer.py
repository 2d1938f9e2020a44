"""An answer as llama.cpp generates it, one token's piece at a time: its bytes, where a
stop string ends it, and how much of it can be streamed already (nothing that may still
turn out to start a stop string, no unfinished UTF-8 character)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


@dataclass(slots=True)
class GeneratedText:
    """One prompt's answer so far, as bytes (a token's piece may end mid-character)."""

    stop: list[bytes]
    text: bytearray = field(default_factory=bytearray)
    streamed: int = 0  # bytes of `text` already handed out by `settled`
    # What turns the bytes handed out into text: it keeps an unfinished character for
    # the next bytes and drops bytes that are no UTF-8 (as `final` does), so the text
    # streamed is the final text, whatever the bytes.
    _utf8: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="ignore")
    )

    def add(self, piece: bytes) -> bool:
        """Append a token's piece. True when that completes a stop string: the answer
        then ends before it (the first stop string listed, as llama-cpp-python does)."""
        text, before = self.text, len(self.text)
        text += piece
        for stop in self.stop:
            # Not there before this piece, so it can only end inside the piece.
            at = text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                del text[at:]
                return True
        return False

    def settled(self) -> str:
        """The text not handed out yet that can no longer change; marked as handed out."""
        text = self.text
        end = len(text)
        for stop in self.stop:
            # Held back: the longest end of the text that a stop string begins with,
            # found where the stop string's first byte is (rarely anywhere near the end).
            first = stop[:1]
            at = text.find(first, max(0, len(text) - len(stop) + 1)) if first else -1
            while at >= 0:
                if stop.startswith(text[at:]):
                    end = min(end, at)
                    break
                at = text.find(first, at + 1)
        if end <= self.streamed:
            return ""
        piece = self._utf8.decode(bytes(text[self.streamed : end]))
        self.streamed = end
        return piece

    def rest(self) -> str:
        """Whatever was not handed out, at the end of the answer."""
        rest = self._utf8.decode(bytes(self.text[self.streamed :]), final=True)
        self.streamed = len(self.text)
        return rest

    def final(self) -> str:
        return bytes(self.text).decode("utf-8", errors="ignore")
