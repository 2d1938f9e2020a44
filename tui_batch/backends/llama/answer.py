"""An answer as llama.cpp generates it, one token's piece at a time: its bytes, where a
stop string ends it, and how much of it can be streamed already (nothing that may still
turn out to start a stop string, no unfinished UTF-8 character)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class GeneratedText:
    """One prompt's answer so far, as bytes (a token's piece may end mid-character)."""

    stop: list[bytes]
    text: bytearray = field(default_factory=bytearray)
    streamed: int = 0  # bytes of `text` already handed out by `settled`

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
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    end = min(end, len(text) - size)
                    break
        while end > self.streamed:
            try:
                piece = bytes(text[self.streamed : end]).decode("utf-8")
            except UnicodeDecodeError:
                end -= 1
                continue
            self.streamed = end
            return piece
        return ""

    def rest(self) -> str:
        """Whatever was not handed out, at the end of the answer."""
        rest = bytes(self.text[self.streamed :]).decode("utf-8", errors="ignore")
        self.streamed = len(self.text)
        return rest

    def final(self) -> str:
        return bytes(self.text).decode("utf-8", errors="ignore")
