"""The analysis widget's "Variants (robustness)" section: which variants a run adds.

A kind (the perturbations of ``robustness.perturbations.PERTURBATIONS``, or a
compressed model: ``prune``, ``int8``, ``prune+int8``), a strength whose range,
step, default and tooltip follow the kind, Add / Remove, and the list of specs as
text (``VariantSpec.name``: ``gaussian:0.1``, ``prune:0.5+int8``). Every spec is
checked by ``VariantSpec.parse`` when it is added, so the list only holds specs
that parse; duplicates are refused. The occlusion mask (a Shapes or Labels layer)
is used by occlusion variants only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import TopoLensError
from ..robustness.perturbations import PERTURBATIONS, STRENGTH_RANGES
from ..robustness.study import VariantSpec

__all__ = ["COMPRESSIONS", "STRENGTHS", "Strength", "VariantForm"]

#: Model compressions offered beside the perturbations.
COMPRESSIONS = ("prune", "int8", "prune+int8")


@dataclass(frozen=True)
class Strength:
    """The strength spin box of one kind; ``None`` for a kind without a strength."""

    low: float
    high: float
    step: float
    default: float
    tooltip: str


#: Range, step, default and meaning of the strength of each kind.
STRENGTHS: dict[str, Strength | None] = {
    "gaussian": Strength(
        0.0,
        1.0,
        0.05,
        0.1,
        "σ of additive Gaussian noise, as a fraction of the images' value range",
    ),
    "salt_pepper": Strength(
        0.0, 1.0, 0.01, 0.05, "fraction of pixels set to the minimum or maximum (half each)"
    ),
    "speckle": Strength(
        0.0, 5.0, 0.05, 0.2, "σ of multiplicative noise x + x·n (x above the minimum)"
    ),
    "poisson": Strength(
        0.0,
        1.0,
        0.05,
        0.1,
        "shot noise: its σ at full brightness, as a fraction of the value range",
    ),
    "uniform": Strength(
        0.0,
        1.0,
        0.05,
        0.1,
        "half-width of additive uniform noise, as a fraction of the value range",
    ),
    "blur": Strength(0.0, 50.0, 0.25, 1.0, "Gaussian blur σ in pixels"),
    "occlusion": Strength(
        0.0,
        1.0,
        0.05,
        0.1,
        "without a mask: a random square patch of this fraction of the image area, greyed to the stack's mean; with an occlusion mask: the opacity (0..1) of the grey over the mask",
    ),
    "fgsm": Strength(
        0.0,
        1.0,
        0.01,
        0.03,
        "ε of the fast gradient sign attack, as a fraction of the value range (against the true labels when given, else the model's own prediction)",
    ),
    "prune": Strength(
        0.0,
        1.0,
        0.05,
        0.5,
        "fraction of the conv/linear weights pruned (global magnitude), on a copy of the model",
    ),
    "int8": None,
    "prune+int8": Strength(
        0.0,
        1.0,
        0.05,
        0.5,
        "fraction pruned, then the linear layers quantised to INT8 (dynamic), on a copy of the model",
    ),
}
assert set(STRENGTHS) == {*PERTURBATIONS, *COMPRESSIONS}
# the spin box of a perturbation spans exactly the range the command line and the API accept
for _kind, (_low, _high) in STRENGTH_RANGES.items():
    _strength = STRENGTHS[_kind]
    assert _strength is not None
    STRENGTHS[_kind] = Strength(_low, _high, _strength.step, _strength.default, _strength.tooltip)


def spec_text(kind: str, strength: float) -> str:
    """The spec text of a kind and strength, as ``VariantSpec.parse`` reads it."""
    if kind == "int8":
        return "int8"
    if kind == "prune+int8":
        return f"prune:{strength:g}+int8"
    return f"{kind}:{strength:g}"


class VariantForm(QWidget):
    """Kind, strength, Add / Remove, the list of variant specs and the occlusion mask.

    ``report(message)`` shows a refusal (a duplicate, a bad strength) where the
    user is looking: the analysis widget's status line.
    """

    def __init__(
        self, mask_choices: Callable[[Any], list[tuple[str, Any]]], report: Callable[[str], None]
    ) -> None:
        super().__init__()
        self._report = report
        self.kind = ComboBox(label="Kind", choices=list(STRENGTHS), value="gaussian")
        self.strength = FloatSpinBox(label="Strength", min=0.0, max=1.0, step=0.05, value=0.1)
        self.strength.native.setDecimals(3)
        self.add_button = QPushButton("Add")
        self.add_button.setToolTip("Add this variant to the run")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected variant from the list")
        self.specs_list = QListWidget()
        self.specs_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.specs_list.setToolTip(
            "Variants run after the base analysis, each with the same layers, sampling and "
            "parameters, and compared with it"
        )
        self.specs_list.setMaximumHeight(86)
        self.occlusion_mask = ComboBox(
            label="Occlusion mask",
            choices=mask_choices,
            nullable=True,
            tooltip=(
                "Pixels an occlusion variant greys out: a Labels layer of the image stack's "
                "grid (nonzero), or a Shapes layer (each shape on the image it is drawn on; "
                "2-D shapes on every image). None: a random square patch per image"
            ),
        )
        self._box = Container(widgets=[self.kind, self.strength], labels=True)
        self._mask_box = Container(widgets=[self.occlusion_mask], labels=True)
        for box in (self._box, self._mask_box):
            box.native.layout().setContentsMargins(0, 0, 0, 0)

        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self._box.native)
        layout.addLayout(buttons)
        layout.addWidget(self.specs_list)
        layout.addWidget(self._mask_box.native)

        self.kind.changed.connect(self._on_kind_changed)
        self.add_button.clicked.connect(self.add)
        self.remove_button.clicked.connect(self.remove_selected)
        self.specs_list.itemSelectionChanged.connect(self._on_selection_changed)
        self._on_kind_changed()
        self._on_selection_changed()

    # ---- state ----------------------------------------------------------------------
    @property
    def texts(self) -> list[str]:
        """The specs in the list, as text, in the order they were added."""
        items = (self.specs_list.item(i) for i in range(self.specs_list.count()))
        return [item.text() for item in items if item is not None]

    def specs(self, seed: int = 0) -> list[Any]:
        """The listed variants as ``VariantSpec`` objects with the run's ``seed``."""
        return [VariantSpec.parse(text, seed=seed) for text in self.texts]

    def reset_choices(self) -> None:
        self.occlusion_mask.reset_choices()

    # ---- actions --------------------------------------------------------------------
    def add(self, _checked: Any = None, *, text: str | None = None) -> str | None:
        """Add the form's spec (or ``text``); returns its name, or ``None`` when refused."""
        if text is None:
            text = spec_text(self.kind.value, float(self.strength.value))
        try:
            spec = VariantSpec.parse(text)  # checks the strength against the kind's range
            if spec.name in self.texts:
                raise TopoLensError(f"variant {spec.name} is in the list already")
        except TopoLensError as exc:
            self._report(f"Variant refused: {exc}")
            return None
        self.specs_list.addItem(spec.name)
        self.specs_list.setCurrentRow(self.specs_list.count() - 1)
        self._report(f"Variant {spec.name} added ({self.specs_list.count()} in the list).")
        return spec.name

    def remove_selected(self, _checked: Any = None) -> str | None:
        """Remove the selected spec; returns its name (``None`` when nothing is selected)."""
        row = self.specs_list.currentRow()
        current = self.specs_list.item(row) if row >= 0 else None
        if current is None or not current.isSelected():
            self._report("Select a variant in the list to remove it.")
            return None
        item = self.specs_list.takeItem(row)
        return item.text() if item is not None else None

    def _on_selection_changed(self) -> None:
        self.remove_button.setEnabled(bool(self.specs_list.selectedItems()))

    def _on_kind_changed(self, _value: Any = None) -> None:
        """Range, step, default and tooltip of the strength follow the kind."""
        strength = STRENGTHS[self.kind.value]
        self.strength.enabled = strength is not None
        if strength is None:
            self.strength.tooltip = f"{self.kind.value} has no strength"
            return
        self.strength.min, self.strength.max = strength.low, strength.high
        self.strength.step = strength.step
        self.strength.value = strength.default
        self.strength.tooltip = f"{strength.tooltip} ({strength.low:g}..{strength.high:g})"
        self.kind.tooltip = self.strength.tooltip
