"""The HTML report of a score file: one static, self-contained page to look at a run.

``write_report(rows, "report.html", images_root=...)`` (CLI: ``sdclip report`` and ``sdclip score --report``)
writes one HTML file with per-prompt ranked grids, a sortable table, per-metric histograms, a
metric-vs-metric scatter with the largest disagreements, and the error rows. No server, CDN or network:
styles, script and data are inside the file; images are *linked* relative to it (``thumbnails=SIZE`` first
writes JPEG thumbnails to a folder beside it), so the HTML stays small (about 150 bytes per row).
"""

from .data import report_data
from .html import render_report
from .writer import write_report

__all__ = ["render_report", "report_data", "write_report"]
