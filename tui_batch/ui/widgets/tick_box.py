"""A checkbox whose glyph says its state: `✓` when on, blank when off.

Textual's Checkbox draws an `X` in both states and tells them apart by colour alone; on
many terminals and themes an unticked box read as ticked (the batch-invariant box did).
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class TickBox(Checkbox):
    """A Checkbox showing `✓` when on and nothing when off."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "✓" if self.value else " "
        return super()._button
