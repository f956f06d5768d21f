"""report.html and the run pages: checked as files (every link and image resolves, the best value of each column is
the one marked, intervals shown) and in headless Chromium at 1280 px (no horizontal overflow, images load, clicking
a header sorts the rows), on results shaped like the mini suite's (many strategies, two streams, three seeds, two
retention protocols) and on the edge cases of tests/test_reports.py."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import pytest

from benchmark.results import iter_results
from reports.__main__ import main as reports_main
from reports.html import render_html
from reports.leaderboard import build_leaderboard
from reports.plots import write_run_plots
from reports.report import collect
from test_reports import chromium, fabricate, results_dir  # noqa: F401  (fixture)

WIDTH = 1280
PHONE = 390
MINI_STRATEGIES = ["full_ft", "linear", "topk", "lora", "block_expansion", "selective_lora", "slca", "lae",
                   "simplecil", "ranpac", "aper_adapter", "l2p", "dualprompt", "coda_prompt", "inflora", "sd_lora",
                   "ease", "hide_prompt", "full_ft@joint"]


@pytest.fixture(scope="module")
def mini_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """19 strategies (a joint upper bound among them) x 2 streams x 3 seeds, head and knn retention, parameter
    counts up to ViT-B's: the widest leaderboard the default suite makes."""
    out = tmp_path_factory.mktemp("mini-like")
    for stream, tasks in (("mini-split-digits", 5), ("mini-domain-digits", 4)):
        for s, strategy in enumerate(MINI_STRATEGIES):
            for n, seed in enumerate((1993, 0, 1)):
                accuracy = 30 + (7 * s + 3 * n) % 60
                matrix = [[accuracy - 2 * (i - j) * (s % 3) if j <= i else 0.0 for j in range(tasks)]
                          for i in range(tasks)]
                retained = {"head": [91.6] + [91.6 - 0.1 * s * (i + 1) for i in range(tasks)],
                            "knn": [88.0] + [88.0 - 0.05 * (s + n) * (i + 1) for i in range(tasks)]}
                fabricate(out, stream, strategy, seed, matrix, retained, params=1930 * 10 ** (s % 4) + 7 * s,
                          task_names=[f"task{t}:{t},{t + 5}" for t in range(tasks)],
                          joint_upper_bound=strategy.endswith("@joint"))
    return out


def report(results: Path, out: Path) -> Path:
    assert reports_main([str(results), "--out", str(out)]) == 0
    return out / "report.html"


@pytest.fixture(scope="module")
def mini_report(mini_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini-like results' report.html, written once for the tests that only read it."""
    return report(mini_like, tmp_path_factory.mktemp("mini-report"))


# ---------------------------------------------------------------- reading the pages back


class Links(HTMLParser):
    """hrefs, image sources and element ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.targets += [attrs[k] for k in ("href", "src") if k in attrs]
        if "id" in attrs:
            self.ids.add(attrs["id"])


def parse_links(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def broken_links(page: Path) -> list[str]:
    """Every link and image of `page` that does not resolve to a file (or, for #fragments, to an id there)."""
    broken = []
    for target in parse_links(page).targets:
        assert not re.match(r"^[a-z]+://", target), f"{page.name} reaches the network: {target}"
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file() or (fragment and fragment not in parse_links(file).ids):
            broken.append(target)
    return broken


class Boards(HTMLParser):
    """The leaderboard tables: per table, its headers and rows of (text, data-v, is best) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("class") == "board":
            self.tables.append({"headers": [], "rows": []})
        elif not self.tables or self.tables[-1].get("done"):
            return
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self.cell = {"tag": tag, "text": "", "v": attrs.get("data-v"), "best": attrs.get("class") == "best"}

    def handle_endtag(self, tag):
        if tag == "table" and self.tables:
            self.tables[-1]["done"] = True
            self.tables[-1]["rows"] = [r for r in self.tables[-1]["rows"] if r]
        elif tag in ("th", "td") and self.cell is not None:
            cell, self.cell = self.cell, None
            if cell["tag"] == "th":
                self.tables[-1]["headers"].append(cell["text"].strip())
            else:
                self.tables[-1]["rows"][-1].append(cell)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def boards(page: Path) -> list[dict]:
    parser = Boards()
    parser.feed(page.read_text())
    return parser.tables


PROBE = """<script>
var errors = 0;
window.addEventListener('error', function () { errors += 1; }, true);
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var sorted = Array.from(document.querySelectorAll('table.board')).map(function (table) {
    var headers = Array.from(table.tHead.rows[0].cells);
    function column(name) {
      var index = headers.findIndex(function (h) { return h.textContent.replace(/[▲▼]/g, '').trim() === name; });
      headers[index].click();
      var first = Array.from(table.tBodies[0].rows).map(function (r) { return r.cells[index].getAttribute('data-v'); });
      headers[index].click();
      var second = Array.from(table.tBodies[0].rows).map(function (r) { return r.cells[index].getAttribute('data-v'); });
      return [first, second, headers[index].getAttribute('aria-sort')];
    }
    headers[0].click();
    var names = Array.from(table.tBodies[0].rows).map(function (r) { return r.cells[0].textContent; });
    return {avg_acc: column('avg_acc'), forgetting: column('forgetting'), names: names};
  });
  var report = {images: images.length, broken: broken, errors: errors, width: document.documentElement.scrollWidth,
                viewport: window.innerWidth, sorted: sorted};
  var encoded = btoa(unescape(encodeURIComponent(JSON.stringify(report))));
  document.body.setAttribute('data-probe', encoded);
  if (window.parent !== window) { window.parent.postMessage(encoded, '*'); }
});
</script>"""
# Headless Chromium's window is at least 500 px wide: a narrower viewport is an iframe of that width, whose probe
# hands its measurements to this outer page.
FRAME = """<!DOCTYPE html><html><body style="margin:0"><iframe src="{src}" style="width:{width}px;height:900px;border:0">
</iframe><script>window.addEventListener('message', function (event) {{
  document.body.setAttribute('data-probe', event.data); }});</script></body></html>"""


def in_chromium(page: Path, profile: Path, width: int = WIDTH) -> dict:
    """Open `page` with the probe at `width` x 900 (default 1280) in headless Chromium; what the probe measured."""
    import base64

    probed = page.with_name(page.stem + ".probe.html")
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    opened = probed
    if width < 500:
        opened = page.with_name(page.stem + ".frame.html")
        opened.write_text(FRAME.format(src=probed.name, width=width))
    process = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         f"--window-size={max(width, 500)},900", "--hide-scrollbars", "--virtual-time-budget=5000",
         "--allow-file-access-from-files", "--dump-dom", opened.as_uri()],
        capture_output=True, text=True, timeout=120)
    probed.unlink()
    opened.unlink(missing_ok=True)
    found = re.search(r'data-probe="([^"]+)"', process.stdout)
    assert found, process.stderr[-2000:]
    return json.loads(base64.b64decode(found.group(1)).decode())


def numbers(values: list) -> list[float]:
    return [float(v) for v in values if v not in ("", None)]


# ---------------------------------------------------------------- tests


def test_mini_like_report_fits_sorts_and_resolves_in_chromium(mini_report, tmp_path):
    page = mini_report
    probe = in_chromium(page, tmp_path / "profile")
    assert probe["viewport"] == WIDTH and probe["width"] <= WIDTH  # no horizontal scrolling
    assert probe["images"] == len(list((page.parent / "plots").glob("*.png"))) and probe["broken"] == 0
    assert probe["errors"] == 0 and len(probe["sorted"]) == 2  # one leaderboard per stream
    for table in probe["sorted"]:
        ascending, descending, state = table["avg_acc"]
        assert numbers(ascending) == sorted(numbers(ascending)) and state == "descending"
        assert numbers(descending) == sorted(numbers(ascending), reverse=True) and len(ascending) == 19
        assert table["names"] == sorted(table["names"])  # the text column sorts alphabetically
    for run_page in sorted((page.parent / "pages").glob("*.html"))[:3]:
        probe = in_chromium(run_page, tmp_path / "profile")
        assert probe["width"] <= WIDTH and probe["broken"] == 0 and probe["errors"] == 0


def test_the_report_and_a_run_page_fit_a_phone(mini_report, tmp_path):
    """At 390 px the page itself never scrolls sideways: wide tables scroll inside their own box, figures shrink."""
    probe = in_chromium(mini_report, tmp_path / "profile", width=PHONE)
    assert probe["viewport"] == PHONE and probe["width"] <= PHONE and probe["broken"] == 0 and probe["errors"] == 0
    run_page = sorted((mini_report.parent / "pages").glob("*.html"))[0]
    probe = in_chromium(run_page, tmp_path / "profile", width=PHONE)
    assert probe["width"] <= PHONE and probe["errors"] == 0


def test_edge_case_report_and_every_run_page_in_chromium(results_dir, tmp_path):  # noqa: F811
    page = report(results_dir, tmp_path / "report")
    probe = in_chromium(page, tmp_path / "profile")
    assert probe["width"] <= WIDTH and probe["broken"] == 0 and probe["errors"] == 0
    pages = sorted((tmp_path / "report" / "pages").glob("*.html"))
    assert len(pages) == len(list(iter_results(results_dir)))  # failed runs get a page too
    for run_page in pages:
        probe = in_chromium(run_page, tmp_path / "profile")
        assert probe["width"] <= WIDTH and probe["broken"] == 0 and probe["errors"] == 0, run_page.name


def test_every_link_and_image_resolves_from_disk(mini_like, mini_report, results_dir, tmp_path):  # noqa: F811
    for page, results in ((mini_report, mini_like), (report(results_dir, tmp_path / "edge"), results_dir)):
        for checked in [page, *sorted((page.parent / "pages").glob("*.html"))]:
            assert broken_links(checked) == [], checked.name
        run_pages = {t for t in parse_links(page).targets if t.startswith("pages/")}
        assert run_pages == {f"pages/{r['run_id']}.html" for r in iter_results(results)}  # every run reachable
    page = report(results_dir, results_dir)  # the default: the report inside the results folder
    for checked in [page, *sorted((results_dir / "pages").glob("*.html"))]:
        assert broken_links(checked) == []


def test_one_leaderboard_per_stream_with_the_best_of_each_column_marked(mini_report):
    tables = boards(mini_report)
    board = pd.read_csv(mini_report.parent / "leaderboard.csv")
    assert len(tables) == board["stream"].nunique() == 2
    better = {"avg_acc": max, "avg_inc_acc": max, "bwt": max, "forgetting": min, "drop head": min,
              "drop knn": min, "trainable": min, "GFLOPs/img": min, "time s": min}
    ties = 0
    for table in tables:
        assert table["headers"][:6] == ["strategy", "avg_acc", "avg_inc_acc", "bwt", "forgetting", "drop head"]
        for header, pick in better.items():
            index = table["headers"].index(header)
            values = [float(row[index]["v"]) for row in table["rows"] if row[index]["v"]]
            marked = [float(row[index]["v"]) for row in table["rows"] if row[index]["best"]]
            assert set(marked) == ({pick(values)} if len(set(values)) > 1 else set()), header  # all tie: none
            ties += len(set(values)) == 1
        seeds = table["headers"].index("seeds")
        assert all(not row[seeds]["best"] for row in table["rows"])  # not a ranked column
    assert ties == 4  # GFLOPs and time: every fabricated run has 2,000 FLOPs and 1.5 s, in both tables


def test_intervals_are_shown_where_there_are_seeds(results_dir, tmp_path):  # noqa: F811
    page = report(results_dir, tmp_path / "report")
    split = next(t for t in boards(page) if len(t["rows"]) > 1)
    avg = split["headers"].index("avg_acc")
    cells = {row[0]["text"]: row[avg]["text"] for row in split["rows"]}
    logits = pd.Series([60.0, 70.0]).map(lambda v: np.log(v / (100 - v)))  # the 95% t-interval of the logits, 2 seeds
    half = scipy.stats.t.ppf(0.975, 1) * logits.std() / 2 ** 0.5
    low, high = (100 / (1 + np.exp(-(logits.mean() + sign * half))) for sign in (-1, 1))
    assert cells["full_ft"] == f"65.00[{low:.2f}, {high:.2f}]" and cells["linear"] == "65.00"  # 1 seed: none

    results, _ = collect([results_dir])
    table = build_leaderboard(results)
    table["avg_acc_ci_low"], table["avg_acc_ci_high"] = table["avg_acc_mean"] - 3, table["avg_acc_mean"] + 4
    out = tmp_path / "with-ci"
    out.mkdir()
    render_html(results, table, {}, out, [results_dir])
    split = next(t for t in boards(out / "report.html") if len(t["rows"]) > 1)
    cells = {row[0]["text"]: row[avg]["text"] for row in split["rows"]}
    assert cells["full_ft"] == "65.00[62.00, 69.00]"


def test_a_run_page_holds_its_matrix_curves_retention_costs_configuration_and_versions(results_dir, tmp_path):  # noqa: F811
    (gated,) = [r for r in iter_results(results_dir) if r["strategy"] == "gated"]
    write_run_plots(gated, results_dir / "runs" / gated["run_id"])
    report(results_dir, tmp_path / "report")
    (both,) = [r for r in iter_results(results_dir) if r["strategy"] == "both"]
    text = (tmp_path / "report" / "pages" / f"{both['run_id']}.html").read_text()
    cells = re.findall(r'<td style="[^"]+">([\d.]+)</td>', text)
    assert cells == ["85.0", "0.0", "50.0", "85.0"]  # R[i][j], row by row
    assert text.count("<svg") == 2 and "Retained pre-training accuracy" in text  # curves, retention
    assert '<polyline fill="none" stroke="#1f77b4"' in text
    for expected in ("avg_acc", "pretrain_drop_knn", "params_trainable", "flops_per_image", "wall_time_s",
                     "&quot;strategy&quot;: &quot;both&quot;", "torch", "2.x"):
        assert expected in text
    links = parse_links(tmp_path / "report" / "pages" / f"{both['run_id']}.html").targets
    assert f"../../results/runs/{both['run_id']}/result.json" in links and "../report.html" in links
    gated_page = tmp_path / "report" / "pages" / f"{gated['run_id']}.html"
    assert f"../../results/runs/{gated['run_id']}/gate_masks.png" in parse_links(gated_page).targets
    (failed,) = [r for r in iter_results(results_dir) if r["status"] == "failed"]
    failed_text = (tmp_path / "report" / "pages" / f"{failed['run_id']}.html").read_text()
    assert "RuntimeError: boom &lt;tag&gt;" in failed_text and "Traceback ..." in failed_text
