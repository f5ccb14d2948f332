"""The headless HTML report of an analysis (matplotlib figures inlined as PNG)."""

from __future__ import annotations

from .html import iter_render_report, render_report, write_report

__all__ = ["iter_render_report", "render_report", "write_report"]
