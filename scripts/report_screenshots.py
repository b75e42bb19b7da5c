"""Screenshots of report.html pages in headless Chromium (Debian's chromium package), and the checks a person
would make looking at them: the verdict on top, and no empty plot (every plot image has drawn content).

    python scripts/report_screenshots.py RUN_DIR [RUN_DIR ...] --out DIR

Each report is rendered again from its run folder's files first (so it shows the current report code), then
photographed at 1200 px wide; prints one JSON line per run with the checks.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from tuneforge.pipelines.report import write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    for run_dir in map(Path, args.run_dirs):
        page = write_report(run_dir)
        shot = out / f"{run_dir.name}.png"
        subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1200,2400", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        checks = check(page.read_text(encoding="utf-8"))
        failed |= not all(checks.values())
        print(json.dumps({"run": str(run_dir), "screenshot": str(shot), **checks}))
    return 1 if failed else 0


def check(page: str) -> dict[str, bool]:
    """The verdict comes before the first section; every inlined plot has drawn pixels in each of its panels."""
    verdict = page.find("id='verdict'")
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    return {"verdict_on_top": 0 <= verdict < page.find("<h2>"),
            "plots": len(images) > 0, "no_empty_plot": all(_drawn(data) for data in images)}


def _drawn(data: str) -> bool:
    """A plot is empty when its image is (nearly) one colour: more than 2% of its pixels differ from the
    background."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("L")
    pixels = list(image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata())
    background = max(set(pixels[::97]), key=pixels[::97].count)
    return sum(1 for p in pixels if abs(p - background) > 16) > 0.02 * len(pixels)


if __name__ == "__main__":
    sys.exit(main())
