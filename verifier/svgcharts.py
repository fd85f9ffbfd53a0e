"""Small inline SVG charts for the audit report: pure functions returning markup, every
label escaped (the report is one self-contained file: no scripts, no external assets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PHASE_COLORS = {
    "fetch": "#5b8def",
    "restore": "#39a387",
    "recovery": "#e0a526",
    "checks": "#9b6ad6",
}
VERDICT_COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#ef6c00"}
W, H, PAD_L, PAD_B, PAD_T = 640, 180, 48, 22, 10


def _axis(max_value: float, unit: str) -> str:
    lines = []
    for i in range(5):
        value = max_value * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        lines.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#666">{value:.0f}{escape(unit)}</text>'
        )
    return "".join(lines)


def _frame(title: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>{body}</svg>'
    )


def _nice_max(values: Sequence[float]) -> float:
    top = max(values, default=0.0)
    if top <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400):
        if top <= step * 4:
            return float(step * 4)
    return top * 1.1


def stacked_phases(title: str, tests: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """One bar per restore test (oldest left), stacked by phase; the bar's height is the
    measured RTO."""
    if not tests:
        return _frame(title, '<text x="10" y="30" font-size="12">no restore tests yet</text>')
    totals = [sum(v for k, v in phases.items() if k in PHASE_COLORS) for _, phases in tests]
    top = _nice_max(totals)
    slot = (W - PAD_L) / len(tests)
    bar = max(1.0, min(24.0, slot * 0.7))
    parts = [_axis(top, "s")]
    for i, (label, phases) in enumerate(tests):
        x = PAD_L + i * slot + (slot - bar) / 2
        y = float(H - PAD_B)
        for phase, color in PHASE_COLORS.items():
            seconds = float(phases.get(phase, 0.0))
            if seconds <= 0:
                continue
            height = (H - PAD_B - PAD_T) * seconds / top
            y -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{color}"><title>{escape(label)}: {escape(phase)} {seconds:.1f} s'
                "</title></rect>"
            )
    legend = "".join(
        f'<rect x="{PAD_L + 90 * i}" y="{H - 12}" width="10" height="10" fill="{c}"/>'
        f'<text x="{PAD_L + 90 * i + 14}" y="{H - 3}" font-size="10">{escape(p)}</text>'
        for i, (p, c) in enumerate(PHASE_COLORS.items())
    )
    return _frame(title, "".join(parts) + legend)


def line(title: str, points: Sequence[tuple[str, float]], unit: str = "s") -> str:
    """Values over successive tests (oldest left), each point titled with its label."""
    if not points:
        return _frame(title, '<text x="10" y="30" font-size="12">no data yet</text>')
    top = _nice_max([v for _, v in points])
    step = (W - PAD_L - 10) / max(1, len(points) - 1)
    coords = [
        (PAD_L + 5 + i * step, H - PAD_B - (H - PAD_B - PAD_T) * v / top)
        for i, (_, v) in enumerate(points)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#5b8def"><title>{escape(label)}: '
        f"{value:.1f} {escape(unit)}</title></circle>"
        for (x, y), (label, value) in zip(coords, points, strict=True)
    )
    return _frame(
        title,
        _axis(top, unit)
        + f'<polyline points="{path}" fill="none" stroke="#5b8def" stroke-width="2"/>'
        + dots,
    )


def verdicts(title: str, tests: Sequence[tuple[str, str]]) -> str:
    """A square per restore test (oldest left), coloured by verdict."""
    if not tests:
        return _frame(title, '<text x="10" y="30" font-size="12">no restore tests yet</text>')
    size = max(4.0, min(18.0, (W - 10) / len(tests) - 2))
    per_row = max(1, int((W - 10) // (size + 2)))
    parts = []
    for i, (label, verdict) in enumerate(tests):
        x = 5 + (i % per_row) * (size + 2)
        y = 5 + (i // per_row) * (size + 2)
        color = VERDICT_COLORS.get(verdict, "#999")
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{size:.1f}" height="{size:.1f}" rx="2" '
            f'fill="{color}"><title>{escape(label)}: {escape(verdict)}</title></rect>'
        )
    rows = (len(tests) - 1) // per_row + 1
    height = 10 + rows * (size + 2)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height:.0f}" width="100%" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )
