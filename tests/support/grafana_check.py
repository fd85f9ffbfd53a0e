"""Type-check Grafana dashboard JSON against @grafana/schema with TypeScript (offline).

The dashboard becomes a TypeScript object literal typed as ``Dashboard`` and each panel as a
``Panel`` whose ``options``/``fieldConfig.defaults.custom`` carry the types of its plugin
(stat, timeseries, state-timeline), so unknown fields, missing required options and bad enum
values are all errors. String enums accept their string values (as in JSON).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = ROOT / "grafana" / "check"

_PLUGINS = {
    "stat": ("stat", "StatPanelCfg", "StatOptions", None),
    "timeseries": ("timeseries", "TimeSeriesPanelCfg", "TimeSeriesOptions", "TimeSeriesField"),
    "state-timeline": (
        "statetimeline",
        "StateTimelinePanelCfg",
        "StateTimelineOptions",
        "StateTimelineField",
    ),
}

_PRELUDE = """
import type {{ Dashboard, Panel, RowPanel }} from '@grafana/schema';
{imports}

type Json<T> = T extends string
  ? `${{T}}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? {{ [K in keyof T]: Json<T[K]> }}
        : T;
type Typed<O, F = Record<string, unknown>> = Json<Omit<Panel<O, F>, 'options'> & {{ options: O }}>;
"""


def _imports() -> str:
    lines = []
    for folder, module, options, field in _PLUGINS.values():
        names = [f"Options as {options}"] + ([f"FieldConfig as {field}"] if field else [])
        lines.append(
            f"import type {{ {', '.join(names)} }} from "
            f"'@grafana/schema/dist/esm/raw/composable/{folder}/panelcfg/x/{module}_types.gen';"
        )
    return "\n".join(lines)


def typescript_for(dashboard: dict[str, Any]) -> str:
    parts = [_PRELUDE.format(imports=_imports())]
    for i, panel in enumerate(dashboard.get("panels", [])):
        kind = panel.get("type")
        if kind == "row":
            parts.append(f"export const panel{i}: Json<RowPanel> = {json.dumps(panel)};")
        elif kind in _PLUGINS:
            _, _, options, field = _PLUGINS[kind]
            typed = f"Typed<{options}, {field}>" if field else f"Typed<{options}>"
            parts.append(f"export const panel{i}: {typed} = {json.dumps(panel)};")
        else:
            raise ValueError(f"panel {i}: no schema check for panel type {kind!r}")
    parts.append(f"export const dashboard: Json<Dashboard> = {json.dumps(dashboard)};")
    return "\n".join(parts) + "\n"


def check(dashboard: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run tsc over the generated file; returncode 0 when the dashboard matches the schema."""
    tsc = CHECK_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.exists():
        raise FileNotFoundError(f"{tsc} missing: run scripts/setup (npm install in grafana/check)")
    with tempfile.TemporaryDirectory(dir=CHECK_DIR, prefix=".check-") as work:
        source = Path(work) / "dashboard.ts"
        source.write_text(typescript_for(dashboard))
        config = {
            "compilerOptions": {
                "strict": True,
                "noEmit": True,
                "target": "es2022",
                "module": "esnext",
                "moduleResolution": "bundler",
                "skipLibCheck": True,
                "types": [],
            },
            "files": [str(source)],
        }
        (Path(work) / "tsconfig.json").write_text(json.dumps(config))
        return subprocess.run(
            ["node", str(tsc), "-p", str(Path(work) / "tsconfig.json")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
