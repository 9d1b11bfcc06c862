"""Write the files that make `dvc plots show` readable offline and tell presets apart by colour.

- `.dvc/plots/by_preset.json`: a DVC plot template (vega-lite) for per-epoch curves of several
  presets: one colour per preset, the colours of the project's figures and of MLflow's runs
  (`reprolab.figures.COLOURS`), dashes per revision (for `dvc plots diff`).
- `.dvc/plots/offline.html`: DVC's HTML page with vega, vega-lite and vega-embed inlined, at the
  versions DVC's own page loads from a CDN (so every chart renders with no network); set as
  `plots.html_template` in `.dvc/config`. The libraries come from the npm registry (`npm pack`),
  once, when this script is run; nothing is fetched when plots are shown.

    python scripts/plots_templates.py            # both files
    python scripts/plots_templates.py --check    # exit 1 if by_preset.json is not what it writes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from reprolab.config import load_config
from reprolab.figures import preset_colour

REPO = Path(__file__).resolve().parents[1]
PLOTS_DIR = REPO / ".dvc/plots"
# What DVC's page (dvc_render.vega.VegaRenderer.SCRIPTS) loads, in this order.
LIBRARIES = (
    ("vega", "5.20.2", "vega.min.js"),
    ("vega-lite", "5.2.0", "vega-lite.min.js"),
    ("vega-embed", "6.18.2", "vega-embed.min.js"),
)
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def by_preset_template() -> dict:
    presets = list(load_config([], REPO / "conf").experiments)
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": "<DVC_METRIC_DATA>"},
        "title": "<DVC_METRIC_TITLE>",
        "width": 420,
        "height": 280,
        # DVC names each row's file relative to the files' common folder: <preset>/history.csv.
        "transform": [{"calculate": "peek(split(replace(datum.filename, '/history.csv', ''), '/'))", "as": "preset"}],
        "mark": {"type": "line", "tooltip": True},
        "encoding": {
            "x": {"field": "<DVC_METRIC_X>", "type": "quantitative", "title": "<DVC_METRIC_X_LABEL>"},
            "y": {
                "field": "<DVC_METRIC_Y>",
                "type": "quantitative",
                "title": "<DVC_METRIC_Y_LABEL>",
                "scale": {"zero": False},
            },
            "color": {
                "field": "preset",
                "type": "nominal",
                "title": "preset",
                "scale": {"domain": presets, "range": [preset_colour(p, presets) for p in presets]},
            },
            "strokeDash": {"field": "rev", "type": "nominal", "title": "revision"},
        },
    }


def template_text() -> str:
    return json.dumps(by_preset_template(), indent=2) + "\n"


def offline_page() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, version, _ in LIBRARIES]
        subprocess.run(["npm", "pack", "--silent", *specs], cwd=tmp, check=True, capture_output=True, timeout=300)
        scripts = []
        for name, version, build in LIBRARIES:
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as archive:
                member = archive.extractfile(f"package/build/{build}")
                assert member is not None
                code = member.read().decode()
            scripts.append(f"    <!-- {name} {version} (npm), inlined -->\n    <script>{code}</script>")
    return PAGE.format(scripts="\n".join(scripts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that by_preset.json is up to date")
    args = parser.parse_args()
    template = PLOTS_DIR / "by_preset.json"
    if args.check:
        if not template.is_file() or template.read_text() != template_text():
            print(f"{template} is out of date: run python scripts/plots_templates.py", file=sys.stderr)
            return 1
        return 0
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    template.write_text(template_text())
    (PLOTS_DIR / "offline.html").write_text(offline_page())
    print(f"wrote {template} and {PLOTS_DIR / 'offline.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
