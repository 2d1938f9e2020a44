"""Figures over scores: accuracy with its 95% interval, and per label precision, recall
and F1 from a confusion matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# The normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion right/n (None for n = 0): unlike the
    normal one it stays inside [0, 1] and is honest for small n and for 0 or n right."""
    if n <= 0:
        return None
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if right <= 0 else max(0.0, centre - half)
    return low, 1.0 if right >= n else min(1.0, centre + half)


def accuracy_text(right: int, scored: int) -> str:
    """`41/50 right: 82.0% (95% CI 69.2-90.2%)`."""
    if not scored:
        return "no answer scored"
    low, high = wilson(right, scored) or (0.0, 0.0)
    return (
        f"{right:,}/{scored:,} right: {100 * right / scored:.1f}% "
        f"(95% CI {100 * low:.1f}-{100 * high:.1f}%)"
    )


@dataclass(frozen=True, slots=True)
class ConfusionCell:
    """The scored results whose expected label is `expected` and whose answer is
    `answered` (None: none of `labels`, or no answer) in one field."""

    field: str
    expected_path: str
    answer_path: str
    expected: str
    answered: str | None
    labels: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.field}: expected {self.expected}, answered {self.answered or 'other'}"

    def sql(self, table: str = "r") -> tuple[str, list[Any]]:
        """A WHERE condition over `table` (a results row) and its parameters."""
        condition = (
            f"{table}.score IS NOT NULL AND lower(json_extract({table}.expected, ?)) = lower(?)"
        )
        params: list[Any] = [self.expected_path, self.expected]
        answer = f"json_extract({table}.output, ?)"
        if self.answered is not None:
            condition += f" AND {answer} = ?"
            params += [self.answer_path, self.answered]
        else:
            marks = ", ".join("?" * len(self.labels)) or "NULL"
            condition += f" AND ({answer} IS NULL OR {answer} NOT IN ({marks}))"
            params += [self.answer_path, self.answer_path, *self.labels]
        return condition, params


@dataclass(slots=True)
class LabelFigures:
    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # how many expected this label


@dataclass(slots=True)
class Confusion:
    """Expected labels (rows) against the answers' (columns) for one choice or enum
    field; `counts[expected][answered]`. Answers outside the labels (an invalid one, a
    free-text one) are one column, OTHER."""

    field: str
    labels: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Where the field is in the expected value and in the answer (JSON paths).
    expected_path: str = "$"
    answer_path: str = "$"

    OTHER = "(other)"

    def cell(self, expected: str, answered: str) -> ConfusionCell:
        """The results of one cell of the matrix, as a filter of the results view."""
        other = answered == self.OTHER
        return ConfusionCell(
            self.field,
            self.expected_path,
            self.answer_path,
            expected,
            None if other else answered,
            tuple(self.labels) if other else (),
        )

    @property
    def columns(self) -> list[str]:
        found = {answer for row in self.counts.values() for answer in row}
        return [*self.labels, *([self.OTHER] if self.OTHER in found else [])]

    def count(self, expected: str, answered: str) -> int:
        return self.counts.get(expected, {}).get(answered, 0)

    def per_label(self) -> list[LabelFigures]:
        figures = []
        for label in self.labels:
            true = self.count(label, label)
            predicted = sum(row.get(label, 0) for row in self.counts.values())
            support = sum(self.counts.get(label, {}).values())
            precision = true / predicted if predicted else None
            recall = true / support if support else None
            # A label expected but never answered has no precision; its F1 is 0.
            f1 = None
            if recall is not None:
                p = precision or 0.0
                f1 = 2 * p * recall / (p + recall) if p + recall else 0.0
            figures.append(LabelFigures(label, precision, recall, f1, support))
        return figures

    def macro_f1(self) -> float | None:
        values = [f.f1 for f in self.per_label() if f.f1 is not None and f.support]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "labels": self.labels,
            "columns": self.columns,
            "matrix": [[self.count(e, a) for a in self.columns] for e in self.labels],
            "per_label": [
                {
                    "label": f.label,
                    "precision": f.precision,
                    "recall": f.recall,
                    "f1": f.f1,
                    "support": f.support,
                }
                for f in self.per_label()
            ],
            "macro_f1": self.macro_f1(),
        }


@dataclass(slots=True)
class PromptAgreement:
    """One prompt run several times: its first result's index, how many runs answered,
    the share alike the most common answer, and that answer."""

    first: int
    answered: int
    agreement: float
    majority: str
    majority_right: bool | None = None


@dataclass(slots=True)
class RepeatFigures:
    """A job of repeats: per prompt, how alike its runs' answers are; the mean of that,
    how many prompts had every run alike, how often each count agreed (`levels`:
    runs alike -> prompts), and the accuracy of the majority answer where it is scored."""

    repeats: int
    prompts: list[PromptAgreement] = field(default_factory=list)
    levels: dict[int, int] = field(default_factory=dict)
    majority_scored: int = 0
    majority_right: int = 0

    @property
    def mean_agreement(self) -> float | None:
        if not self.prompts:
            return None
        return sum(p.agreement for p in self.prompts) / len(self.prompts)

    @property
    def unanimous(self) -> int:
        return sum(1 for p in self.prompts if p.agreement >= 1.0)

    def least_alike(self, count: int) -> list[PromptAgreement]:
        return sorted(self.prompts, key=lambda p: (p.agreement, p.first))[:count]

    def to_dict(self) -> dict[str, Any]:
        return {
            "repeats": self.repeats,
            "prompts": len(self.prompts),
            "mean_agreement": self.mean_agreement,
            "unanimous": self.unanimous,
            "levels": {str(k): v for k, v in sorted(self.levels.items())},
            "majority_scored": self.majority_scored,
            "majority_right": self.majority_right,
            "per_prompt": [
                {
                    "first_index": p.first,
                    "answered": p.answered,
                    "agreement": p.agreement,
                    "majority": p.majority,
                    "majority_right": p.majority_right,
                }
                for p in self.prompts
            ],
        }


def agreement_of(
    repeats: int, answers: list[tuple[int, str | None, float | None]]
) -> RepeatFigures:
    """Figures from each result's `(prompt index, answer key, score)`, in index order
    (a prompt's runs are `repeats` indices in a row; a failed run's key is None)."""
    figures = RepeatFigures(repeats)
    group: list[tuple[str, float | None]] = []
    current = -1

    def close() -> None:
        if not group:
            return
        counts: dict[str, int] = {}
        for key, _ in group:
            counts[key] = counts.get(key, 0) + 1
        majority, alike = max(counts.items(), key=lambda item: item[1])
        score = next((s for key, s in group if key == majority), None)
        right = None if score is None else score >= 1.0 - 1e-9
        figures.prompts.append(
            PromptAgreement(current * repeats, len(group), alike / len(group), majority, right)
        )
        figures.levels[alike] = figures.levels.get(alike, 0) + 1
        if right is not None:
            figures.majority_scored += 1
            figures.majority_right += right

    for index, key, score in answers:
        prompt = index // repeats
        if prompt != current:
            close()
            group, current = [], prompt
        if key is not None:
            group.append((key, score))
    close()
    return figures
