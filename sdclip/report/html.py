"""The report's HTML: one page with the data as JSON, the stylesheet and the script inlined."""

from __future__ import annotations

import html
import json
from typing import Any

from .assets import SCRIPT, STYLE

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="data:,"><meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style></head>
<body>
<header><h1>{title}</h1><div id="summary"></div>
<nav><a href="#s-grids">ranked grids</a><a href="#s-table">all rows</a><a href="#s-hist">histograms</a>
<a href="#s-scatter">metric vs metric</a><a href="#s-errors">errors</a></nav></header>
<section id="s-grids"><h2>Ranked by <select id="rank-by"></select></h2><div id="grids"></div></section>
<section id="s-table"><h2>All rows (click a header to sort)</h2>
<div class="tablewrap"><table id="rows"><thead><tr></tr></thead><tbody></tbody></table></div></section>
<section id="s-hist"><h2>Histograms</h2><div class="plots" id="histograms"></div></section>
<section id="s-scatter"><h2>Metric vs metric: <select id="scatter-x"></select> against <select id="scatter-y"></select></h2>
<div class="plots"><div id="scatter"></div><div><h3>Where they disagree most (z-scores)</h3>
<div class="grid" id="disagree"></div></div></div></section>
<section id="s-errors"><h2>Errors (<span id="error-count"></span>)</h2>
<table><thead><tr><th>image</th><th>prompt</th><th>error</th></tr></thead><tbody id="errors"></tbody></table></section>
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body></html>
"""


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` escaped, lone surrogates as ``\\udcxx``."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8", "backslashreplace").decode()


def render_report(data: dict[str, Any], *, title: str = "sdclip scores") -> str:
    """The whole HTML page for ``report_data``'s output.

    Example:
        >>> page = render_report({"metrics": ["clip"], "rankBy": "clip", "prompts": ["a </script>"], "rows": []})
        >>> page.startswith("<!DOCTYPE html>") and "a \\\\u003c/script\\\\u003e" in page
        True
    """
    safe_title = html.escape(title.encode("utf-8", "replace").decode("utf-8"))
    return _PAGE.format(title=safe_title, style=STYLE, data=_json_for_script(data), script=SCRIPT)
