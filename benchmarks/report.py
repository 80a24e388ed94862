"""Result records and their Markdown rendering.

Every figure is printed with its ratio to the baseline system (dbqueue on PostgreSQL unless
``--baseline`` says otherwise): ``figure / baseline figure``. For rates above 1x is faster than
the baseline; for latencies above 1x is slower.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class ThroughputRun:
    """Processing throughput of one worker configuration, one rate per repeat."""

    config: str
    rates: list[float] = field(default_factory=list)
    duplicates: int = 0
    error: str | None = None

    @property
    def jobs_per_second(self) -> float | None:
        """Median rate, or ``None`` if a run failed."""
        if self.error or not self.rates:
            return None
        return statistics.median(self.rates)


@dataclass
class SystemResult:
    """Everything measured for one system; ``None`` figures were not measured."""

    key: str
    title: str
    bulk_api: str
    notes: str = ""
    skipped: str | None = None
    enqueue_single: float | None = None
    enqueue_bulk: float | None = None
    sweep: list[ThroughputRun] = field(default_factory=list)
    latency_config: str | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    load_at_start: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def best(self) -> ThroughputRun | None:
        """The worker configuration with the highest throughput, if any run succeeded."""
        measured = [run for run in self.sweep if run.jobs_per_second is not None]
        return max(measured, key=lambda run: run.jobs_per_second or 0.0, default=None)

    def figures(self) -> dict[str, float | None]:
        """The headline figures, keyed by column; latencies in milliseconds."""
        best = self.best
        return {
            "single": self.enqueue_single,
            "bulk": self.enqueue_bulk,
            "throughput": best.jobs_per_second if best else None,
            "p50": None if self.latency_p50 is None else self.latency_p50 * 1000,
            "p95": None if self.latency_p95 is None else self.latency_p95 * 1000,
        }


COLUMNS = {
    "single": "Enqueue, single (jobs/s)",
    "bulk": "Enqueue, bulk (jobs/s)",
    "throughput": "Throughput (jobs/s)",
    "p50": "Latency p50 (ms)",
    "p95": "Latency p95 (ms)",
}


def number(value: float) -> str:
    """Human-friendly figure: thousands separators for rates, decimals for small values."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def first_line(text: str, width: int = 160) -> str:
    """The first line of a (possibly multi-line) error message, shortened to ``width``."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def cell(value: float | None, baseline: float | None) -> str:
    """``figure (ratiox)``, or a dash when the figure is missing."""
    if value is None:
        return "—"
    if baseline is None or baseline == 0:
        return number(value)
    return f"{number(value)} ({value / baseline:.2f}x)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(results: Sequence[SystemResult], baseline_key: str) -> str:
    """The headline table: one row per measured system."""
    base = next((r.figures() for r in results if r.key == baseline_key and not r.skipped), {})
    rows = []
    for result in results:
        if result.skipped:
            continue
        figures = result.figures()
        best = result.best
        config = best.config if best else (result.latency_config or "—")
        row = [result.title]
        row += [cell(figures[column], base.get(column)) for column in COLUMNS]
        rows.append([*row, config])
    return table(["System", *COLUMNS.values(), "Worker config"], rows)


def sweep_table(results: Sequence[SystemResult]) -> str:
    """Throughput of every worker configuration tried, best marked."""
    rows = []
    for result in results:
        best = result.best
        for run in result.sweep:
            if run.jobs_per_second is None:
                figure = f"failed: {first_line(run.error or '')}"
            else:
                figure = number(run.jobs_per_second)
                if run is best:
                    figure = f"**{figure}**"
                if len(run.rates) > 1:
                    figure += f" (runs: {', '.join(number(rate) for rate in run.rates)})"
            if run.duplicates:
                figure += f" ({run.duplicates} duplicate runs)"
            rows.append([result.title, run.config, figure])
    return table(["System", "Worker config", "Throughput (jobs/s)"], rows)


def driven(result: SystemResult) -> str:
    """One bullet saying how a system was driven, its caveats and how busy the machine was."""
    line = f"- **{result.title}**: bulk enqueue = {result.bulk_api}."
    if result.notes:
        line += f" {result.notes}"
    if result.load_at_start is not None:
        line += f" 1-minute load average when its workloads began: {result.load_at_start:.2f}."
    return line


def render(
    results: Sequence[SystemResult],
    info: Mapping[str, str],
    parameters: Mapping[str, str],
    baseline_key: str,
    command: str,
) -> str:
    """The full Markdown report: machine, parameters, tables, how each system was driven."""
    baseline = next((r.title for r in results if r.key == baseline_key), baseline_key)
    measured = [r for r in results if not r.skipped]
    parts = [
        "# dbqueue benchmark results",
        f"Command: `{command}`",
        table(["Machine", "Value"], [[key, value] for key, value in info.items()]),
        table(["Parameter", "Value"], [[key, value] for key, value in parameters.items()]),
    ]
    if measured:
        parts += [
            "## Results",
            f"Ratios are figure / the {baseline} figure: above 1x is faster for rates, "
            "slower for latencies. Throughput is the best worker configuration, named in the "
            "last column; latency was measured with that configuration.",
            summary_table(measured, baseline_key),
            "## Throughput by worker configuration",
            sweep_table(measured),
            "## How each system was driven",
            "\n".join(driven(r) for r in measured),
        ]
    skipped = [f"- **{r.title}**: {first_line(r.skipped)}" for r in results if r.skipped]
    if skipped:
        parts += ["## Skipped", "\n".join(skipped)]
    errors = [f"- **{r.title}**: {first_line(e)}" for r in results for e in r.errors]
    if errors:
        parts += ["## Errors", "\n".join(errors)]
    return "\n\n".join(parts) + "\n"
