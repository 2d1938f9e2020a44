"""`?`: every key of every screen, from their bindings."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


def key_table(app_bindings: list[Binding]) -> Table:
    """Every key: the app's (given, so this module need not import the app) and each
    screen's."""
    from tui_batch.ui.screens.checkpoints import CheckpointsScreen
    from tui_batch.ui.screens.compare import CompareScreen
    from tui_batch.ui.screens.group import GroupScreen
    from tui_batch.ui.screens.jobs import JobsScreen
    from tui_batch.ui.screens.progress import ProgressScreen
    from tui_batch.ui.screens.results import ResultsScreen
    from tui_batch.ui.screens.setup import SetupScreen
    from tui_batch.ui.screens.stats import StatsScreen
    from tui_batch.ui.widgets.template_editor import TemplateEditor
    from tui_batch.ui.widgets.virtual_table import VirtualTable

    table = Table(show_header=True, header_style="bold", expand=True, box=None)
    table.add_column("Where", style="bold cyan", no_wrap=True)
    table.add_column("Key", style="bold", no_wrap=True)
    table.add_column("Action")
    sections = [
        ("Everywhere", app_bindings),
        ("Job setup", SetupScreen.BINDINGS),
        ("Template editor", TemplateEditor.BINDINGS),
        ("Progress", ProgressScreen.BINDINGS),
        ("Jobs", JobsScreen.BINDINGS),
        ("Checkpoints", CheckpointsScreen.BINDINGS),
        ("Results", ResultsScreen.BINDINGS),
        ("Stats", StatsScreen.BINDINGS),
        ("Compare", CompareScreen.BINDINGS),
        ("Group", GroupScreen.BINDINGS),
        ("Tables", VirtualTable.BINDINGS),
    ]
    for where, bindings in sections:
        for binding in bindings:
            # "app.…" bindings repeat an app key on a screen, to hide it from its footer.
            if (
                isinstance(binding, Binding)
                and binding.description
                and not binding.action.startswith("app.")
            ):
                keys = ", ".join(_key_name(k) for k in binding.key.split(","))
                table.add_row(where, keys, binding.description)
                where = ""
    table.add_row("Everywhere", "ctrl+p", "Command palette")
    table.add_row("", "escape", "Back")
    table.add_row("", "ctrl+q", "Quit")
    return table


def _key_name(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "plus": "+", "equals_sign": "=", "minus": "-"}
    return names.get(key, key)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(key_table(type(self.app).BINDINGS))
        yield Footer()
