"""PNG charts of the load test (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def alert_delay(
    points: list[tuple[float, float]],
    path: Path = HERE / "load-alert-delay.png",
    publishing_until: float | None = None,
) -> Path:
    """points: (seconds since start when the event was published, delay to its post in s)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if points:
        xs, ys = zip(*sorted(points), strict=True)
        ax.scatter(xs, ys, s=8, alpha=0.6, label="one alert (event, channel)")
    if publishing_until is not None:
        ax.axvline(publishing_until, color="grey", linestyle=":", label="publishing stops")
    ax.set_xlabel("published at (s since start)")
    ax.set_ylabel("publish → Slack post (s)")
    ax.set_title("Alert delay under load")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def memory(
    samples: list[tuple[float, float]],
    path: Path = HERE / "load-memory.png",
    applied: list[tuple[float, int]] | None = None,
    published: list[tuple[float, int]] | None = None,
) -> Path:
    """samples: (seconds since start, RSS MiB); optional cumulative applied/published events."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if samples:
        xs, ys = zip(*samples, strict=True)
        ax.plot(xs, ys, color="tab:red", label="bot RSS (MiB)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title("Bot memory and events under load")
    lines, labels = ax.get_legend_handles_labels()
    if applied or published:
        ax2 = ax.twinx()
        for series, label, style in (
            (published, "events published", "--"),
            (applied, "events applied", "-"),
        ):
            if series:
                xs, ys = zip(*series, strict=True)
                ax2.plot(xs, ys, linestyle=style, color="tab:blue", alpha=0.7, label=label)
        ax2.set_ylabel("events (cumulative)")
        more_lines, more_labels = ax2.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
    ax.legend(lines, labels, loc="upper left", fontsize=8)
    return _save(fig, path)
