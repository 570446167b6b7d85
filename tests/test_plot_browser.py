"""The written HTML renders in a real headless Chromium, offline, with every point.

The page is opened from a copy with two scripts added: one at the top of
``<head>`` records JavaScript errors, one at the end of ``<body>`` waits for
Plotly to draw and writes, into ``<pre id="result">``, the errors and a count of
points per (role, class) read from the graph div's own ``data``. Chromium's
``--dump-dom`` prints the page after ``--virtual-time-budget`` has run out.

Skips where no Chromium is found (``chromium`` on PATH or ``BROWSER_PATH``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fslcli.plotting import PointSet, episode_figure, write_figure


def _find_chromium() -> str | None:
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        return explicit if Path(explicit).is_file() and os.access(explicit, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found: install one (apt-get install -y chromium) or set BROWSER_PATH",
)

_CAPTURE_ERRORS = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(String(e.message || (e.target && e.target.src) || e));
}, true);
window.addEventListener("unhandledrejection", function (e) {
  window.__errors.push("unhandled rejection: " + String(e.reason));
});
</script>"""

_REPORT = """<pre id="result">pending</pre>
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var out = {errors: window.__errors, counts: {}, xlens: {}, plotly: typeof Plotly, rendered: false};
    try {
      var gd = document.querySelector(".plotly-graph-div");
      out.rendered = !!(gd && gd._fullLayout && gd.querySelector(".main-svg"));
      var scene = gd._fullLayout.scene && gd._fullLayout.scene._scene;
      out.webgl_scene = !!(scene && scene.glplot);
      gd.data.forEach(function (trace, t) {
        var key = trace.meta.role + "|" + trace.meta["class"];
        (trace.customdata || []).forEach(function (row) {
          var k = row[2] + "|" + row[1];
          out.counts[k] = (out.counts[k] || 0) + 1;
        });
        // x as Plotly drew it (typed arrays arrive base64-encoded and are decoded here).
        out.xlens[key] = (out.xlens[key] || 0) + gd._fullData[t].x.length;
      });
    } catch (err) {
      out.errors.push("report: " + String(err));
    }
    document.getElementById("result").textContent = JSON.stringify(out);
  }, 500);
});
</script>"""


def _episode_points(rng: np.random.Generator, dims: int = 2) -> tuple[PointSet, Counter]:
    """A 3-way, 2-shot, 3-query episode plus prototypes; each class has one wrong query."""
    classes = ["Bass Tuba", "Violin", "Flute"]
    rows: list[tuple[str, str, str, str | None]] = []  # (class, role, path, predicted)
    for k, c in enumerate(classes):
        rows += [(c, "support", f"/data/{c}/s{s}.wav", None) for s in range(2)]
        rows += [(c, "query", f"/data/{c}/q{q}.wav", c if q else classes[(k + 1) % 3]) for q in range(3)]
        rows.append((c, "prototype", "", None))
    labels, roles, paths, predicted = (list(col) for col in zip(*rows, strict=True))
    points = PointSet(rng.normal(size=(len(rows), dims)), labels, roles, paths, predicted)
    return points, Counter(f"{role}|{c}" for c, role, _, _ in rows)


def _render(page_path: Path, tmp_path: Path) -> dict:
    """Open ``page_path`` in headless Chromium and return the page's JSON report."""
    page = page_path.read_text(encoding="utf-8")
    page = page.replace("<head>", "<head>" + _CAPTURE_ERRORS, 1)
    page = page.replace("</body>", _REPORT + "</body>", 1)
    probe = tmp_path / "probe.html"
    probe.write_text(page, encoding="utf-8")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no result in Chromium's DOM (exit {proc.returncode}); stderr:\n{proc.stderr[-2000:]}"
    assert match.group(1) != "pending", "the page never reported: Plotly did not finish loading"
    return json.loads(html.unescape(match.group(1)))


@pytest.mark.parametrize("dims", [2, 3])
def test_episode_html_renders_every_point_without_js_errors(tmp_path: Path, dims: int) -> None:
    points, expected = _episode_points(np.random.default_rng(0), dims)
    written = write_figure(episode_figure(points, "episode"), tmp_path / "episode.html")

    report = _render(written, tmp_path)

    assert report["errors"] == []
    assert report["plotly"] == "object", "plotly.js was not inlined in the page"
    assert report["rendered"], "Plotly did not draw the graph"
    assert report["webgl_scene"] == (dims == 3), "3-D scene missing (no WebGL?) or unexpected"
    assert Counter(report["counts"]) == expected
    assert Counter(report["xlens"]) == expected
