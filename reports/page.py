"""The report's HTML skeleton shared by report.html and the run pages: one stylesheet, one small sorting script,
escaping and a plain table helper. Everything inline: the pages open from disk with no network."""

from __future__ import annotations

import html
from typing import Any, Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 12px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.8em 0; }
caption { text-align: left; font-size: 0.95em; color: #555; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } .label, th.label { text-align: left; }
table.board { width: 100%; } table.board th { cursor: pointer; white-space: normal; user-select: none; }
table.board th[aria-sort=ascending]::after { content: " ▲"; } table.board th[aria-sort=descending]::after { content: " ▼"; }
td.best { font-weight: bold; background: #e2f0d9; }
td small { color: #666; display: block; white-space: nowrap; }
table.matrix td { min-width: 2.6em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 100%; }
figcaption { font-size: 0.8em; color: #555; max-width: 560px; }
img, svg.chart { max-width: 100%; height: auto; }
svg.chart text { font-size: 11px; fill: #444; }
ul.legend { list-style: none; padding: 0; margin: 0.2em 0; font-size: 0.75em; max-width: 520px; }
ul.legend li { display: inline-block; margin-right: 0.9em; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: middle; }
.side { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
pre { font-size: 0.75em; background: #f7f7f7; padding: 0.5em; white-space: pre-wrap; overflow-wrap: anywhere; }
code { overflow-wrap: anywhere; } .meta { color: #555; } .failed { color: #a00; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; } .scroll > table { margin: 0.4em 0; }
@media (max-width: 600px) {  /* a phone: tables scroll inside their box, figures take the whole width */
  body { padding: 0 6px; } h1 { font-size: 1.25em; } figure { margin: 0.5em 0; display: block; }
  figcaption { max-width: 100%; } table { font-size: 0.75em; } .side { display: block; }
}
"""

# Click a header of a `table.board` to sort its rows by that column (again: the other way). Cells sort by their
# `data-v` number when they have one (empty = no value: always last), else by their text.
SORT_SCRIPT = """
function cellKey(cell) {
  var v = cell.getAttribute('data-v');
  if (v === null) { return cell.textContent.trim().toLowerCase(); }
  return v === '' ? null : parseFloat(v);
}
document.querySelectorAll('table.board').forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (th, index) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = cellKey(a.cells[index]), y = cellKey(b.cells[index]);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var order = typeof x === 'number' ? x - y : x.localeCompare(y);
        return ascending ? order : -order;
      });
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def e(value: Any) -> str:
    return html.escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """A plain table; cells are HTML already (escape text with `e`); the first column is left-aligned."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=label" if i == 0 else ""}>{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    caption = f"<caption>{e(caption)}</caption>" if caption else ""
    return scrolling(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def scrolling(html_table: str) -> str:
    """A table in a box that scrolls sideways when the table is wider than the window (a phone), so the page does
    not."""
    return f'<div class="scroll">{html_table}</div>'



def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{e(title)}</title><style>{STYLE}</style></head>'
            f"<body>\n{body}\n<script>{SORT_SCRIPT}</script></body></html>\n")
