"""Render an HTML file in headless Chromium (no driver) and read back layout checks made inside the page.

`render_checks` copies the page, appends a small script that runs on `load` and writes a JSON verdict into
`<body data-layout-check=...>`, runs `chromium --headless --dump-dom` on the copy at a given window size and parses
the attribute out of the dumped DOM. The verdict holds the viewport width, the document's scroll width, every <img>
that did not load, and every element that sticks out of the viewport or clips its own content horizontally.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var vw = window.innerWidth, out = {innerWidth: vw, innerHeight: window.innerHeight,
    scrollWidth: document.documentElement.scrollWidth, images: 0, broken: [], outside: [], clipped: []};
  function name(el) { return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && typeof el.className === "string" ? "." + el.className.split(" ")[0] : ""); }
  document.querySelectorAll("img").forEach(function (img, i) {
    out.images += 1;
    if (!img.complete || img.naturalWidth === 0) { out.broken.push(i + ":" + (img.alt || "")); }
  });
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) { out.outside.push(name(el) + " right=" + r.right); }
    var ox = getComputedStyle(el).overflowX;
    if (ox !== "visible" && el.scrollWidth > el.clientWidth + 1) { out.clipped.push(name(el)); }
  });
  document.body.setAttribute("data-layout-check", JSON.stringify(out));
});
</script>
"""


def find_chromium() -> str | None:
    """Path of a Chromium binary (Debian's `chromium`, or `chromium-browser` / `google-chrome`), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium_cmd(binary: str, user_dir: str, width: int, height: int) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={user_dir}",
            f"--window-size={width},{height}", "--virtual-time-budget=5000"]


def render_checks(
    page: Path, *, width: int = 1366, height: int = 768, screenshot: Path | None = None, timeout: float = 120.0
) -> dict[str, Any]:
    """Load `page` in headless Chromium at width×height and return the in-page layout verdict (see module doc).

    With `screenshot`, also writes a full-width PNG of the first screen there (to look at by eye).
    Raises FileNotFoundError without a Chromium binary and RuntimeError when the verdict is missing.
    """
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (apt-get install chromium)")
    text = Path(page).read_text(encoding="utf-8")
    if "</body>" not in text:
        raise ValueError(f"{page}: no </body> tag to attach the check script to")
    with tempfile.TemporaryDirectory(prefix="mammokit-chromium-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
        env = {**os.environ, "HOME": tmp}
        cmd = _chromium_cmd(binary, str(Path(tmp) / "profile"), width, height)
        proc = subprocess.run([*cmd, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        if screenshot is not None:
            subprocess.run([*cmd, f"--screenshot={Path(screenshot).resolve()}", probe.as_uri()],
                           capture_output=True, timeout=timeout, env=env, check=False)
    match = re.search(r'data-layout-check="([^"]*)"', proc.stdout)
    if match is None:
        raise RuntimeError(f"chromium gave no layout verdict (rc={proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(html.unescape(match.group(1)))
