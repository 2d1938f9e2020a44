"""`tui-batch stats`: a job's figures as a readable report for a terminal."""

from __future__ import annotations

import time

from tui_batch.core.compare import STATES, CompareRow, CompareSummary
from tui_batch.core.compare_fields import answers_shown
from tui_batch.core.job_figures import JobStats
from tui_batch.core.progress import format_duration
from tui_batch.core.scoring.figures import Confusion, accuracy_text
from tui_batch.core.spread import Spread
from tui_batch.core.text import one_line as _one_line

# Failure groups and examples printed before "... and N more".
SHOWN_GROUPS = 10
BARS = " ▁▂▃▄▅▆▇█"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def spread_row(name: str, spread: Spread, shown=_seconds) -> tuple[str, ...]:
    return (
        name,
        str(spread.count),
        shown(spread.mean),
        shown(spread.p50),
        shown(spread.p90),
        shown(spread.p99),
        shown(spread.max),
    )


def cache_lines(stats: JobStats) -> list[str]:
    """How the job used the answer cache: hits, misses, tokens and cost saved."""
    if stats.cache == "off" and not stats.cached:
        return []
    text = f"{stats.cached:,} served from it"
    if stats.misses is not None:
        text = f"{stats.cached:,} hits, {stats.misses:,} misses"
    saved = stats.cached_tokens_input + stats.cached_tokens_output
    text += f"; {saved:,} tokens saved"
    if stats.cost_saved is not None:
        text += f" (cost {stats.cost_saved:.4f})"
    return [f"  cache      {stats.cache}: {text}"]


def input_lines(stats: JobStats) -> list[str]:
    """Which records of its input the job took, where it did not take them all in one run."""
    lines = []
    if stats.input_slice:
        lines.append(f"  input      {stats.input_slice}")
    if stats.reading:
        lines.append(f"  input      still being read in: {stats.total:,} prompts so far")
    if stats.merged_from:
        lines.append(
            f"  merged     from {len(stats.merged_from)} shards: {', '.join(stats.merged_from)}"
        )
    return lines


# A job's batches listed by `stats` at most (all: `tui-batch batches JOB`).
BATCHES_LISTED = 10


def batch_lines(stats: JobStats) -> list[str]:
    """A Batch API job's batches: how long each waited for the provider to run it and
    ran there, the longest of each, and its status and counts."""
    if not stats.batches:
        return []
    now = time.time()
    waits = [w for b in stats.batches if (w := b.waited(now)) is not None]
    runs = [r for b in stats.batches if (r := b.ran(now)) is not None]
    count = len(stats.batches)
    lines = [
        f"  batches    {count:,} through the Batch API: waited at most "
        f"{format_duration(max(waits, default=None))}, ran at most "
        f"{format_duration(max(runs, default=None))}"
    ]
    for batch in stats.batches[:BATCHES_LISTED]:
        counts = f"{batch.completed:,} of {batch.total or batch.lines:,} done"
        if batch.failed:
            counts += f", {batch.failed:,} failed"
        lines.append(
            f"    {batch.number:>4} {batch.status or batch.state:<11} {counts}; waited "
            f"{format_duration(batch.waited(now))}, ran {format_duration(batch.ran(now))}"
        )
    if count > BATCHES_LISTED:
        lines.append(f"    and {count - BATCHES_LISTED:,} more: tui-batch batches {stats.job_id}")
    return lines


def stats_lines(stats: JobStats, charts: bool = True) -> list[str]:
    """The report, line by line (tables aligned); without `charts`, no failure groups
    and no tokens over time (the stats screen draws its own)."""
    empty = f" ({stats.empty:,} empty answers)" if stats.empty else ""
    lines = [
        f"Job {stats.job_id}{_named(stats.name)} on {_one_line(stats.model_id, 200)}: "
        f"{stats.status}",
        f"  prompts    {stats.total:,}: {stats.completed:,} succeeded{empty}, "
        f"{stats.failed:,} failed, {stats.pending:,} not run ({stats.success_rate:.1f}% ok)",
        f"  tokens     {tokens_line(stats)}",
        f"  speed      {stats.tokens_per_second:.1f} generated tokens/s over "
        f"{format_duration(stats.active_seconds)} active",
    ]
    lines[1:1] = input_lines(stats)
    cost = stats.cost
    if cost is not None and stats.prices is not None:
        lines.append(
            f"  cost       {cost['total']:.4f} ({cost['input']:.4f} in at "
            f"{stats.prices.input:g}/M, {cost['output']:.4f} out at {stats.prices.output:g}/M"
            + (f", Batch API x{stats.prices.discount:g}" if stats.prices.discount != 1 else "")
            + ")"
            + (", more for the tokens not counted" if stats.input_unknown else "")
        )
    lines += cache_lines(stats)
    lines += batch_lines(stats)
    rows = [("", "n", "mean", "p50", "p90", "p99", "max")]
    rows.append(spread_row("latency", stats.latency))
    if stats.queue_wait.count:  # servers: the wait before the answering request
        rows.append(spread_row("queue wait", stats.queue_wait))
    rows.append(spread_row("first token", stats.ttft))
    rows.append(spread_row("tok/s a prompt", stats.prompt_tokens_per_second, _rate))
    if stats.reasoning is not None and stats.reasoning.length.count:
        rows.append(spread_row("thought tokens", stats.reasoning.length, _whole))
    lines += ["", "Per prompt (succeeded)", *_table(rows)]
    sampled = [
        (name, figure)
        for name, figure in (
            ("latency", stats.latency),
            ("queue wait", stats.queue_wait),
            ("first token", stats.ttft),
            ("tok/s", stats.prompt_tokens_per_second),
        )
        if figure.sampled
    ]
    if sampled:
        taken = "; ".join(f"{name} {f.sampled:,} of {f.count:,}" for name, f in sampled)
        lines.append(f"  p50/p90/p99 from an even sample: {taken}")
    lines += thought_lines(stats)
    lines += answer_lines(stats)
    lines += score_lines(stats, charts)
    lines += repeat_lines(stats)
    tries = ", ".join(
        f"{count:,} in {n} {'try' if n == 1 else 'tries'}"
        for n, count in stats.attempts.items()
        if n  # 0: served from the cache, said above
    )
    if tries:
        lines += ["", f"Attempts   {tries}"]
    if stats.endpoints:
        # Requests sent and failed, as each result's attempt log has them: the counts
        # the progress screen shows too.
        rows = [("server", "answered", "failed", "tok out", "latency", "sent", "errors",
                 "1st token")]  # fmt: skip
        for e in stats.endpoints:
            rows.append(
                (
                    _one_line(e.endpoint, 60),
                    f"{e.results:,}",
                    f"{e.failed:,}",
                    f"{e.tokens_output:,}",
                    _seconds(e.mean_latency),
                    f"{e.requests:,}",
                    f"{e.request_errors:,}",
                    _seconds(e.mean_ttft),
                )
            )
        lines += ["", "Per server (mean latency and time to first token)", *_table(rows)]
    if not charts:
        return lines
    if stats.failures:
        lines += ["", "Failures by reason"]
        lines += _group_lines([(g.count, g.reason, g.examples) for g in stats.failures], "reasons")
    if stats.throughput:
        lines += ["", *throughput_lines(stats)]
    return lines


def answer_lines(stats: JobStats) -> list[str]:
    """A job with a schema: its answers, valid and invalid (the invalid by where they
    broke it), and each label field's values with a bar each."""
    if stats.schema is None:
        return []
    checked = stats.valid + stats.invalid
    share = f" ({100 * stats.valid / checked:.1f}% valid)" if checked else ""
    lines = [
        "",
        f"Answers    {_one_line(stats.schema, 200)}",
        f"  {stats.valid:,} valid, {stats.invalid:,} invalid{share}",
    ]
    groups = [(g.count, g.message, g.examples) for g in stats.invalid_groups]
    lines += _group_lines(groups, "places", width=120)
    for name, counts in stats.labels.items():
        total = sum(counts.values()) or 1
        rows = [
            (
                _one_line(value, 40),
                f"{count:,}",
                f"{100 * count / total:.1f}%",
                "█" * round(20 * count / total),
            )
            for value, count in counts.items()
        ]
        lines += ["", f"{_one_line(name, 60)} (valid answers)", *_table(rows)]
    return lines


def score_lines(stats: JobStats, matrices: bool = True) -> list[str]:
    """A job with expected answers: accuracy with its 95% interval, the mean score, and
    per label precision, recall and F1 with the confusion matrix (`matrices`: the stats
    screen draws its own)."""
    if stats.scoring is None:
        return []
    unscored = stats.done - stats.scored
    mean = f", mean score {stats.mean_score:.3f}" if stats.mean_score is not None else ""
    lines = [
        "",
        f"Scores     {_one_line(stats.scoring, 200)}",
        f"  accuracy {accuracy_text(stats.right, stats.scored)}{mean}"
        + (f"; {unscored:,} unscored" if unscored else ""),
    ]
    for confusion in stats.confusions if matrices else []:
        rows = [("label", "precision", "recall", "F1", "expected")]
        rows += [
            (_one_line(f.label, 30), _share(f.precision), _share(f.recall), _share(f.f1),
             f"{f.support:,}")
            for f in confusion.per_label()
        ]  # fmt: skip
        macro = confusion.macro_f1()
        title = f"{_one_line(confusion.field, 60)} per label"
        lines += ["", title + (f" (macro F1 {macro:.3f})" if macro is not None else "")]
        lines += [*_table(rows), "", *confusion_lines(confusion)]
    return lines


def _whole(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def thought_lines(stats: JobStats) -> list[str]:
    """A model that thought: the answers with a thought, those left with none after it,
    and the tokens and cost spent thinking."""
    figures = stats.reasoning
    if figures is None:
        return []
    line = f"Reasoning  {figures.thoughts:,} answers came with a thought"
    if figures.cut:
        line += f"; {figures.cut:,} thought to the end of their tokens and gave no answer"
    lines = ["", line]
    if figures.share is not None:
        spent = f"  thinking   {figures.tokens:,} of {figures.tokens_output:,} output tokens "
        spent += f"({100 * figures.share:.1f}%)"
        if stats.thinking_cost is not None:
            spent += f", {stats.thinking_cost:.4f} of the cost"
        lines.append(spent)
    return lines


def repeat_lines(stats: JobStats) -> list[str]:
    """A job of repeats: how alike each prompt's runs answered, the majority vote's
    accuracy, and the prompts whose runs agreed least."""
    figures = stats.repeats
    if figures is None or not figures.prompts:
        return []
    n = figures.repeats
    mean = figures.mean_agreement or 0.0
    lines = [
        "",
        f"Repeats    {n} runs a prompt, {len(figures.prompts):,} prompts: mean agreement "
        f"{100 * mean:.1f}% (share of runs alike the most common answer); "
        f"{figures.unanimous:,} unanimous",
    ]
    levels = " · ".join(
        f"{alike}/{n} alike: {count:,}" for alike, count in sorted(figures.levels.items())[::-1]
    )
    lines.append(f"  {levels}")
    if figures.majority_scored:
        lines.append(
            "  majority vote " + accuracy_text(figures.majority_right, figures.majority_scored)
        )
    least = [p for p in figures.least_alike(SHOWN_GROUPS) if p.agreement < 1.0]
    if least:
        lines.append("  least alike (first index, agreement, majority answer):")
        lines += [
            f"  {p.first:>8}  {100 * p.agreement:5.1f}%  {_one_line(p.majority, 80)}" for p in least
        ]
    return lines


def confusion_lines(confusion: Confusion) -> list[str]:
    """The confusion matrix as text: expected labels down, answers across."""
    columns = confusion.columns
    rows = [("expected \\ answered", *(_one_line(c, 20) for c in columns))]
    for label in confusion.labels:
        rows.append((_one_line(label, 30), *(f"{confusion.count(label, c):,}" for c in columns)))
    return [f"Confusion of {_one_line(confusion.field, 60)}", *_table(rows)]


def row_mark(row: CompareRow) -> str:
    """A compared row's state, or with scores whether it got worse (`regression`)."""
    if row.regression:
        return "regression"
    marks = [a.right for a in row.answers]
    if marks and marks[0] is False and any(marks[1:]):
        return "improved"
    return row.state


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _group_lines(
    groups: list[tuple[int, str, list[int]]], noun: str, width: int = 200
) -> list[str]:
    """Groups of results (count, what they share, first prompts), a line each, the
    first SHOWN_GROUPS of them, then how many more `noun` there are."""
    lines = [
        f"  {count:>6,}  {_one_line(text, width)}  (prompts {', '.join(map(str, examples))}, ...)"
        for count, text, examples in groups[:SHOWN_GROUPS]
    ]
    if len(groups) > SHOWN_GROUPS:
        lines.append(f"  ... and {len(groups) - SHOWN_GROUPS} more {noun}")
    return lines


def tokens_line(stats: JobStats) -> str:
    """`13,253 in, 2,352 out`, saying how many results have no count (never 0)."""
    text = f"{stats.tokens_input:,} in, {stats.tokens_output:,} out"
    unknown = []
    if stats.input_unknown:
        unknown.append(f"{stats.input_unknown:,} without an input count")
    if stats.output_unknown:
        unknown.append(f"{stats.output_unknown:,} without an output count")
    if unknown:
        text += f" ({'; '.join(unknown)}: the server sent none)"
    return text


def throughput_lines(stats: JobStats) -> list[str]:
    """Tokens generated over time as one line of bars, a bucket a character."""
    width = stats.bucket_seconds
    by_offset = {offset: tokens for offset, tokens, _ in stats.throughput}
    last = max(by_offset)
    values = [by_offset.get(offset, 0) for offset in range(0, last + 1, width)]
    peak = max(values) or 1
    bars = "".join(BARS[min(len(BARS) - 1, round(v / peak * (len(BARS) - 1)))] for v in values)
    return [
        f"Tokens generated over time, {width} s a bar (peak {peak / width:.1f} tok/s):",
        f"  {bars}",
    ]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def compare_lines(
    summary: CompareSummary, rows: list[CompareRow], total: int, width: int = 100
) -> list[str]:
    """The comparison's summary, then `rows` (a page of `total`), one line each, to fit
    `width` columns (a terminal's); structured answers field by field, only the fields
    that differ where they do."""
    states = " · ".join(f"{state} {summary.states.get(state, 0):,}" for state in STATES)
    lines = [
        f"{len(summary.jobs)} jobs, {summary.rows:,} prompts matched on {summary.matched_on}",
        f"  {states}",
        "",
    ]
    scored = any(side.scoring for side in summary.jobs)
    table = [("job", "name", "model", "results", "success", "tokens out", "mean latency")]
    if scored:
        table[0] += ("accuracy",)
    for side in summary.jobs:
        row = (
            side.job_id,
            _one_line(side.name or "-", 40),
            _one_line(side.model_id, 60),
            f"{side.results:,}",
            f"{side.success_rate:.1f}%",
            f"{side.tokens_output:,}",
            _seconds(side.mean_latency),
        )
        if scored:
            row += (accuracy_text(side.right, side.scored) if side.scoring else "not scored",)
        table.append(row)
    lines += _table(table)
    if scored:
        lines += [
            "",
            f"  regressions {summary.regressions:,} (right in {summary.jobs[0].job_id}, "
            f"wrong, failed or missing in another) · improvements {summary.improvements:,}",
        ]
    if summary.fields:
        agreement = " · ".join(
            f"{_one_line(f.name, 40)} {f.rate:.1f}% ({f.agree:,} of {f.compared:,})"
            for f in summary.fields
        )
        lines += ["", f"  agreement by field: {agreement}"]
    if rows:
        lines.append("")
        # What is left of the line after the key and the mark, shared by the answers.
        each = max(12, (width - 40 - 5 * (len(summary.jobs) - 1)) // len(summary.jobs))
        for row in rows:
            answers = "  |  ".join(_one_line(shown, each) for shown in answers_shown(row))
            mark = row_mark(row)
            lines.append(f"  {_one_line(row.key, 24):24}  {mark:10}  {answers}")
    if total > len(rows):
        lines.append(f"  ... {total - len(rows):,} more rows (--limit N, or --json / --csv)")
    return lines


def _named(name: str | None) -> str:
    return f" ({_one_line(name, 80)})" if name else ""
