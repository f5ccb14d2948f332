"""Small HTML pieces the report's sections share: escaped text, numbers, figures, tables.

Every section module (``report.html``, ``report.robustness``) writes its markup
with these, so the page reads alike throughout.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

__all__ = ["escaped", "figure_html", "number_text", "table_html"]


def escaped(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def number_text(value: Any, digits: int = 3) -> str:
    """A number as the report writes it: ``digits`` significant digits, – for None/nan, ∞."""
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    return escaped(value)


def figure_html(uri: str | None, caption: str) -> str:
    """A ``<figure>`` of an inline PNG with its caption (HTML); empty without a figure."""
    if uri is None:
        return ""
    return (
        f'<figure><img alt="{escaped(caption)}" src="{uri}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def table_html(header: list[str], rows: list[list[str]]) -> str:
    """A scrollable table; ``header`` and the cells are HTML already."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
