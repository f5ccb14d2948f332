"""A checkable tree of a model's modules, for picking the layers to analyse.

The tree mirrors ``model.named_modules()`` (``features.0`` sits under
``features``), so a user finds a layer where the model's code puts it. Only
modules that the forward pass actually calls can be checked: hooks on the others
would never fire. A module the forward pass calls more than once (one
``pool`` after two convolutions) gets one checkable child per call, ``pool#1``,
``pool#2`` (the names ``list_layers`` gives), and the module itself cannot be
checked: each call is a layer of its own. Checked names come back in forward
order, the order the analysis expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QTreeWidget, QTreeWidgetItem

if TYPE_CHECKING:
    import torch

__all__ = ["ModuleTree"]

_NAME_ROLE = Qt.ItemDataRole.UserRole


class ModuleTree(QTreeWidget):
    """Tree of ``named_modules()`` with a check box on every hookable module.

    Signals
    -------
    selection_changed
        Emitted whenever a check box changes.
    """

    selection_changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Module", "Type"])
        self.setUniformRowHeights(True)
        self.setMinimumHeight(160)
        self._items: dict[str, QTreeWidgetItem] = {}
        self._forward_order: list[str] = []
        self.itemChanged.connect(lambda *_: self.selection_changed.emit())

    # ---- filling ------------------------------------------------------------------
    def set_model(
        self, model: torch.nn.Module, hookable: Sequence[str], checked: Iterable[str] = ()
    ) -> None:
        """Show ``model``'s modules; ``hookable`` (forward order) get check boxes.

        Parameters
        ----------
        model : torch.nn.Module
        hookable : sequence of str
            Names the forward pass reaches, in that order (``list_layers``).
        checked : iterable of str
            Names checked at first (e.g. a sample's default layers).
        """
        self.blockSignals(True)
        try:
            self.clear()
            self._items = {}
            self._forward_order = list(hookable)
            calls = _calls_by_module(model, hookable)
            reachable, wanted = set(hookable), set(checked)
            for name, module in model.named_modules():
                if name:
                    self._add_module(name, type(module).__name__, calls, reachable, wanted)
            self.expandAll()
            self.resizeColumnToContents(0)
        finally:
            self.blockSignals(False)
        self.selection_changed.emit()

    def _add_module(
        self,
        name: str,
        type_name: str,
        calls: dict[str, list[str]],
        reachable: set[str],
        wanted: set[str],
    ) -> None:
        """The item of module ``name`` under its parent's, and one child per call of it."""
        parent = self._items.get(name.rpartition(".")[0])
        short = name.rpartition(".")[2]
        item = QTreeWidgetItem([short, type_name])
        item.setData(0, _NAME_ROLE, name)
        item.setToolTip(0, name)
        flags = item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable
        if name in calls and name not in reachable:
            item.setToolTip(
                0,
                f"{name}: called {len(calls[name])} times by the forward pass; tick "
                "the call(s) to analyse below it",
            )
        elif name in reachable:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
            item.setCheckState(0, _check_state(name in wanted))
        else:
            item.setToolTip(0, f"{name}: never called by the forward pass, cannot be hooked")
            item.setForeground(
                0,
                self.palette().brush(
                    self.palette().ColorGroup.Disabled, self.palette().ColorRole.Text
                ),
            )
        item.setFlags(flags)
        if parent is None:
            self.addTopLevelItem(item)
        else:
            parent.addChild(item)
        self._items[name] = item
        self._add_calls(item, name, calls.get(name, []), wanted)

    def _add_calls(
        self, item: QTreeWidgetItem, name: str, call_names: list[str], wanted: set[str]
    ) -> None:
        """A checkable child per call of a module the forward pass calls more than once."""
        short = name.rpartition(".")[2]
        for number, call_name in enumerate(call_names, start=1):
            if call_name in self._items:
                continue
            call = QTreeWidgetItem([f"{short}#{number}", f"call {number} of {len(call_names)}"])
            call.setData(0, _NAME_ROLE, call_name)
            call.setToolTip(0, f"{call_name}: the output of call {number} of {name}")
            call.setFlags(call.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            call.setCheckState(0, _check_state(call_name in wanted))
            item.addChild(call)
            self._items[call_name] = call

    # ---- reading / writing --------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Hookable module names, in forward order."""
        return list(self._forward_order)

    def checked(self) -> list[str]:
        """Checked module names, in forward order."""
        return [
            name
            for name in self._forward_order
            if name in self._items and self._items[name].checkState(0) == Qt.CheckState.Checked
        ]

    def set_checked(self, names: Iterable[str]) -> None:
        """Check exactly ``names`` (unknown or unhookable names are ignored)."""
        wanted = set(names)
        self.blockSignals(True)
        try:
            for name in self._forward_order:
                item = self._items.get(name)
                if item is not None:
                    item.setCheckState(
                        0, Qt.CheckState.Checked if name in wanted else Qt.CheckState.Unchecked
                    )
        finally:
            self.blockSignals(False)
        self.selection_changed.emit()

    def item(self, name: str) -> QTreeWidgetItem:
        """The tree item of module ``name`` (for tests and keyboard navigation)."""
        return self._items[name]


def _check_state(checked: bool) -> Qt.CheckState:
    return Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked


def _calls_by_module(model: torch.nn.Module, hookable: Sequence[str]) -> dict[str, list[str]]:
    """Module name -> its per-call names (``pool#1``, ``pool#2``), in forward order."""
    named = dict(model.named_modules())
    calls: dict[str, list[str]] = {}
    for hook_name in hookable:
        base, _, number = hook_name.rpartition("#")
        if number.isdigit() and base in named and hook_name not in named:
            calls.setdefault(base, []).append(hook_name)
    return calls
