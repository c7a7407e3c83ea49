"""PNG charts for the digests, drawn with matplotlib's Agg backend (no display needed).

matplotlib is imported when the first chart is drawn (it takes about a second), so processes
that never post a digest do not pay for it. The figure is closed after rendering: pyplot keeps
every open figure otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Sequence


def digest_chart(
    stages: Sequence[tuple[str, float]],
    weeks: Sequence[tuple[str, float]],
    *,
    unit: str,
    title: str,
) -> bytes:
    """Two panels: the open pipeline by stage, and the won value (or count) per week."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    left, right = fig.subplots(1, 2)
    left.bar([s for s, _ in stages], [v for _, v in stages], color="#2e7d32")
    left.set_title(f"Open pipeline by stage ({unit})", fontsize=10)
    right.bar([w for w, _ in weeks], [v for _, v in weeks], color="#1565c0")
    right.set_title(f"Won, last {len(weeks)} weeks ({unit})", fontsize=10)
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        ax.tick_params(axis="y", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
