"""The layer picker lists a module called more than once once per call.

``ModuleTree`` is built directly here: it is a part of the analysis widget, not a
dock widget napari creates, and these checks are about the tree alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qtpy.QtCore import Qt

from napari_topolens.activations.models import list_layers
from napari_topolens.ui.analysis_widget import spread_layers
from napari_topolens.ui.module_tree import ModuleTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_module_calls import build


def test_each_call_of_a_shared_module_is_its_own_checkable_entry(qtbot):
    model = build()
    names = list_layers(model, (1, 16, 16))
    tree = ModuleTree()
    qtbot.addWidget(tree)
    tree.set_model(model, names, checked=["pool#2", "pool"])
    assert tree.names == names
    pool = tree.item("pool")
    assert not pool.flags() & Qt.ItemFlag.ItemIsUserCheckable  # the module is no layer of its own
    assert "called 2 times" in pool.toolTip(0)
    calls = [pool.child(i) for i in range(pool.childCount())]
    assert [c.text(0) for c in calls] == ["pool#1", "pool#2"]
    assert [c.text(1) for c in calls] == ["call 1 of 2", "call 2 of 2"]
    assert all(c.flags() & Qt.ItemFlag.ItemIsUserCheckable for c in calls)
    assert tree.item("act").childCount() == 3
    assert tree.checked() == ["pool#2"]  # the plain name of a shared module ticks nothing
    tree.set_checked(["act#3", "pool#1", "conv1"])
    assert tree.checked() == ["conv1", "pool#1", "act#3"]  # forward order
    tree.item("pool#2").setCheckState(0, Qt.CheckState.Checked)
    assert tree.checked() == ["conv1", "pool#1", "pool#2", "act#3"]
    # modules called once are plain, checkable entries as before
    assert tree.item("conv2").flags() & Qt.ItemFlag.ItemIsUserCheckable
    # a model without defaults gets a spread that can pick calls
    assert spread_layers(model, names) == ["pool#1", "pool#2"]
