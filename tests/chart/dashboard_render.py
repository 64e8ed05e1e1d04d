"""Draw a Grafana dashboard's panels from a live Prometheus, without Grafana.

No Grafana server runs here, so a person reviewing the dashboards looks at
PNGs instead: each panel's PromQL is evaluated as Grafana would send it (the
dashboard's template variables resolved through their own `label_values`
queries, interval macros replaced), and drawn with matplotlib on the panel's
grid position, with its unit, thresholds, axis scale and legend, and the
dashboard's annotations as vertical markers. What it returns (series per
query) lets a test assert that no panel is empty.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # no display: render to files only

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import EngFormatter, FuncFormatter, PercentFormatter

LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$", re.S)
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "yellow": "#f2cc0c",
          "blue": "#3274d9", "purple": "#a352cc"}


@dataclass
class Macros:
    """What Grafana substitutes for its interval macros at this time range and step."""

    rate_interval: str
    interval: str
    range: str


@dataclass
class Prometheus:
    api: str  # http://host:port/api/v1

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        body = httpx.get(f"{self.api}/{path}", params=params, timeout=30).json()
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body}")
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self._get("query", params)["result"])

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self._get("query_range", {"query": expr, "start": start, "end": end,
                                              "step": step})["result"])

    def label_values(self, label: str, selector: str | None, start: float,
                     end: float) -> list[str]:
        params: dict[str, Any] = {"start": start, "end": end}
        if selector:
            params["match[]"] = selector
        return sorted(self._get(f"label/{label}/values", params))


@dataclass
class Variables:
    """Template variables resolved in dashboard order, as Grafana's refresh does."""

    values: dict[str, str] = field(default_factory=dict)
    options: dict[str, list[str]] = field(default_factory=dict)

    def apply(self, text: str, macros: Macros) -> str:
        text = (text.replace("$__rate_interval", macros.rate_interval)
                .replace("$__interval", macros.interval).replace("$__range", macros.range))
        for name in sorted(self.values, key=len, reverse=True):
            text = text.replace("${" + name + "}", self.values[name])
            text = re.sub(r"\$" + name + r"\b", lambda _m, n=name: self.values[n], text)
        return text


def grafana_regex_escape(value: str) -> str:
    """How Grafana's Prometheus data source escapes one value of a multi-value
    variable: regex metacharacters get a backslash, itself escaped inside the
    PromQL string (so `a.b` becomes `a\\\\.b` in the query text)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m[0], value)


def resolve(dashboard: dict[str, Any], prom: Prometheus, chosen: dict[str, str],
            start: float, end: float, macros: Macros) -> Variables:
    """Each query variable from its label_values query; `chosen` picks a single
    value (else the first option, Grafana's default); multi-value variables
    select All, which Grafana sends to Prometheus as a regex alternation."""
    out = Variables()
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        name = var["name"]
        m = LABEL_VALUES.match(var["query"].strip())
        if not m:
            raise ValueError(f"variable {name}: not a label_values query: {var['query']}")
        selector = out.apply(m["selector"], macros) if m["selector"] else None
        options = prom.label_values(m["label"], selector, start, end)
        if var.get("regex"):
            pattern = re.compile(var["regex"].strip("/"))
            found = [pattern.search(o) for o in options]
            options = sorted({f.group(1) if f.groups() else f.group(0) for f in found if f})
        out.options[name] = options
        if not options:
            raise AssertionError(f"variable {name} has no options ({var['query']})")
        if var.get("multi") and var.get("includeAll") and name not in chosen:
            out.values[name] = "(" + "|".join(grafana_regex_escape(o) for o in options) + ")"
        else:
            value = chosen.get(name, options[0])
            if value not in options:
                raise AssertionError(f"variable {name}: {value!r} not among {options}")
            out.values[name] = value
    return out


def legend(fmt: str, metric: dict[str, str], expr: str) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__") or expr
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m[1], ""), fmt)


def unit_formatter(unit: str) -> Any:
    if unit == "percentunit":
        return PercentFormatter(1.0, decimals=None)
    if unit == "s":
        return FuncFormatter(lambda v, _p: format_value(v, "s"))
    if unit == "bytes":
        return EngFormatter(unit="B")
    if unit in ("reqps", "ops"):
        return EngFormatter(unit="/s")
    return EngFormatter()


def format_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.3g} %"
    if unit == "s":  # Grafana's duration units: ms up to a second, then s, min, h
        for scale, name in ((3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms"), (1e-6, "us")):
            if value == 0 or abs(value) >= scale or scale == 1e-6:
                return f"{value / scale:.3g} {name}"
    suffix = {"s": "s", "bytes": "B", "reqps": "/s", "ops": "/s"}.get(unit, "")
    if value == 0:
        return f"0 {suffix}".strip()
    prefix = ""
    for scale, name in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m")):
        if abs(value) >= scale or scale == 1e-3:
            value, prefix = value / scale, name
            break
    return f"{value:.3g} {prefix}{suffix}".strip()


def _color(name: str) -> str:
    return COLORS.get(name, name)


def _threshold_steps(panel: dict[str, Any]) -> list[tuple[str, float | None]]:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [(_color(s["color"]), s["value"]) for s in steps]


@dataclass
class PanelResult:
    dashboard: str
    panel: str
    ref: str
    expr: str
    series: int  # series with at least one value


def _points(series: dict[str, Any]) -> tuple[list[datetime], list[float]]:
    times = [datetime.fromtimestamp(float(t), tz=UTC) for t, _ in series["values"]]
    return times, [float(v) for _, v in series["values"]]


def _draw_timeseries(ax: Axes, panel: dict[str, Any], data: list[tuple[dict[str, Any],
                     list[dict[str, Any]]]], marks: list[tuple[float, str, str]]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    unit = defaults.get("unit", "short")
    for target, result in data:
        for s in result:
            times, values = _points(s)
            name = legend(target.get("legendFormat", ""), s["metric"], target["expr"])
            dashed = name == "expected" or name == "budget" or name.endswith(" budget")
            ax.plot(times, values, lw=1.2, ls="--" if dashed else "-", label=name)
    if custom.get("scaleDistribution", {}).get("type") == "log":
        ax.set_yscale("log", base=custom["scaleDistribution"].get("log", 10))
    else:
        ax.yaxis.set_major_formatter(unit_formatter(unit))
        lo, hi = ax.get_ylim()
        lo = defaults.get("min", lo)
        hi = defaults.get("max", max(hi, custom.get("axisSoftMax", hi)))
        ax.set_ylim(lo, hi)
    if custom.get("scaleDistribution", {}).get("type") == "log":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_value(v, unit)))
    if custom.get("thresholdsStyle", {}).get("mode", "off") != "off":
        for color, value in _threshold_steps(panel):
            if value is not None:
                ax.axhline(value, color=color, ls=":", lw=1.5)
    for when, color, _name in marks:
        ax.axvline(datetime.fromtimestamp(when, tz=UTC), color=color, lw=1.2, alpha=0.8,
                   zorder=0)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ncol = 1 if len(labels) <= 3 else 2 if len(labels) <= 8 else 3
        ax.legend(fontsize=6.5, ncol=ncol, loc="upper left", framealpha=0.7)


def _draw_stat(ax: Axes, panel: dict[str, Any], data: list[tuple[dict[str, Any],
               list[dict[str, Any]]]]) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    values = [float(s["values"][-1][1]) for _, r in data for s in r if s["values"]]
    value = values[-1] if values else float("nan")
    color = "#3274d9"
    for c, threshold in _threshold_steps(panel):
        if threshold is None or (not math.isnan(value) and value >= threshold):
            color = c
    ax.set_facecolor(color)
    ax.text(0.5, 0.45, format_value(value, unit), ha="center", va="center", fontsize=22,
            color="white", transform=ax.transAxes, weight="bold")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_table(ax: Axes, panel: dict[str, Any], data: list[tuple[dict[str, Any],
                list[dict[str, Any]]]]) -> None:
    excluded: set[str] = {"__name__"}
    order: dict[str, int] = {}
    for t in panel.get("transformations", []):
        if t["id"] == "organize":
            excluded |= {k for k, v in t["options"].get("excludeByName", {}).items() if v}
            order = t["options"].get("indexByName", {})
    rows = [s["metric"] for _, r in data for s in r]
    columns = sorted({k for r in rows for k in r} - excluded,
                     key=lambda k: (order.get(k, 99), k))
    ax.axis("off")
    if rows:
        cells = [[r.get(c, "") for c in columns] for r in sorted(rows, key=lambda r: str(r))]
        table = ax.table(cellText=cells, colLabels=columns, loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)


def render(dashboard: dict[str, Any], prom: Prometheus, variables: Variables, macros: Macros,
           start: float, end: float, step: float, out: Path) -> list[PanelResult]:
    """Draw every panel on a 24-column grid into `out`; report series per query."""
    name = dashboard["title"]
    results: list[PanelResult] = []
    marks: list[tuple[float, str, str]] = []
    for a in dashboard["annotations"]["list"]:
        if a["datasource"].get("type") != "prometheus":
            continue
        expr = variables.apply(a["target"]["expr"], macros)
        found = prom.range(expr, start, end, step)
        results.append(PanelResult(name, f"annotation: {a['name']}", "", expr, len(found)))
        color = a["iconColor"]
        for s in found:
            # Grafana merges consecutive steps of one series into one event.
            last = -math.inf
            for t, _ in s["values"]:
                if float(t) - last > step * 1.5:
                    marks.append((float(t), _color(color), f"{a['name']}: {color}"))
                last = float(t)

    panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, height * 0.42))
    grid = fig.add_gridspec(height, 24, hspace=0.0, wspace=0.0, left=0.03, right=0.99,
                            top=1 - 1.2 / height, bottom=0.02)
    legend_of_marks = ", ".join(sorted({n for _, _, n in marks}))
    fig.suptitle(f"{name}  ({', '.join(f'{k}={v}' for k, v in variables.values.items())})\n"
                 f"annotations (vertical lines): {legend_of_marks or 'none'}",
                 fontsize=11, y=1 - 0.1 / height)
    for p in panels:
        g = p["gridPos"]
        cell = grid[g["y"]: g["y"] + g["h"], g["x"]: g["x"] + g["w"]]
        if p["type"] == "row":
            ax = fig.add_subplot(cell)
            ax.axis("off")
            ax.text(0, 0.5, p["title"], fontsize=12, weight="bold", va="center")
            continue
        data = []
        for t in p["targets"]:
            expr = variables.apply(t["expr"], macros)
            if t.get("instant"):
                result = prom.instant(expr, end)
                result = [{"metric": s["metric"], "values": [s["value"]]} for s in result]
            else:
                result = prom.range(expr, start, end, step)
            series = [s for s in result
                      if any(not math.isnan(float(v)) for _, v in s["values"])]
            results.append(PanelResult(name, p["title"], t["refId"], expr, len(series)))
            data.append((t, series))
        inner = cell.subgridspec(1, 1, wspace=0, hspace=0)
        ax = fig.add_subplot(inner[0])
        pos = ax.get_position()
        # Grafana-like gutters: shrink the axes inside its cell, leave room for the title.
        ax.set_position((pos.x0 + 0.012, pos.y0 + pos.height * 0.12 / max(1, g["h"] / 4),
                         pos.width - 0.018, pos.height * (1 - 0.28 / max(1, g["h"] / 4))))
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(f"{p['title']}  [{unit}]" if p["type"] == "timeseries" else p["title"],
                     fontsize=9, loc="left")
        if p["type"] == "timeseries":
            _draw_timeseries(ax, p, data, marks)
        elif p["type"] == "stat":
            _draw_stat(ax, p, data)
        elif p["type"] == "table":
            _draw_table(ax, p, data)
        else:
            raise ValueError(f"no renderer for panel type {p['type']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return results
