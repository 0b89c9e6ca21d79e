"""Outcomes: what guests did after a flow decided for them (converted? revenue?), and what the flow meant.

A batch run records what each guest was *served*; whether that paid off is known elsewhere: in the shop's
order data (an outcomes CSV: a guest column, ``converted``, optional ``revenue``) or, on the sandbox, in its
simulated outcomes (drawn from each guest's hidden propensity and the variant's true lift, so the "right"
answer is known). This module reads both into one shape, ``guest, converted, revenue[, true_variant]``,
joins them onto a run, and maps the flow's own variants and splits onto the labels the batch detected.

Why the mapping: the API never names the variant (design.md), so a run holds labels such as ``A`` or a
body fingerprint, while the flow defines ``A – Free shipping`` at 50%. The sandbox knows each guest's true
variant, so a label is matched to the variant it most often stands for; without that truth, labels that
name a variant (exactly, or as the first word: ``A`` for ``A – Free shipping``) are matched by name; failing
both, every label is expected to get an equal share.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flowlab.analysis.stats import join_outcomes
from flowlab.batch.samples import RowProblem
from flowlab.errors import SampleError

if TYPE_CHECKING:
    from flowlab.admin import SandboxAdmin

__all__ = [
    "GUEST_COLUMNS",
    "OUTCOME_COLUMNS",
    "control_label",
    "expected_shares",
    "label_variants",
    "lift_sentences",
    "read_outcomes",
    "sandbox_outcomes",
    "true_lifts",
    "with_outcomes",
]

#: The columns of an outcomes table (``true_variant`` only when the sandbox supplies it).
OUTCOME_COLUMNS: tuple[str, ...] = ("guest", "converted", "revenue", "true_variant")
#: Names accepted for the guest column of an outcomes CSV, in order of preference (any case).
GUEST_COLUMNS: tuple[str, ...] = ("guest", "browserId", "email", "guestId")

_YES = frozenset({"true", "1", "yes", "y", "t", "1.0"})
_NO = frozenset({"false", "0", "no", "n", "f", "0.0"})
_MAX_LISTED = 5
# "A" names "A – Free shipping": the label, then a separator that is not part of a word.
_NAME_SEPARATORS = re.compile(r"[\s\-–—:(|/]")


# ---- reading outcomes -----------------------------------------------------------------------------------


def sandbox_outcomes(admin: SandboxAdmin, friendly_id: str) -> pd.DataFrame:
    """The sandbox's simulated outcomes for everyone who executed ``friendly_id``, keyed like a batch run.

    ``guest`` is the identity value a batch sends (the guest's first browserId, else its email), so the
    table joins onto a run with :func:`with_outcomes`. ``true_variant`` is the variant the sandbox really
    assigned (its name, e.g. ``A – Free shipping``): the truth that detection and split mapping check against.
    """
    rows = admin.outcomes(friendly_id)
    guests = [str(r.get("browserId") or r.get("email") or r.get("guestRef") or "") for r in rows]
    return pd.DataFrame(
        {
            "guest": pd.Series(guests, dtype=object),
            "converted": pd.Series([bool(r.get("converted")) for r in rows], dtype=bool),
            "revenue": pd.Series([float(r.get("revenue") or 0.0) for r in rows], dtype=float),
            "true_variant": pd.Series([str(r.get("variant") or "") for r in rows], dtype=object),
        }
    )


@contextmanager
def _text_stream(source: str | Path | IO[str] | IO[bytes]) -> Iterator[tuple[IO[str], str]]:
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise SampleError(f"{path}: no such file; give the path of an outcomes CSV")
        with path.open(encoding="utf-8-sig", newline="") as text:
            yield text, path.name
        return
    name = Path(str(getattr(source, "name", "") or "outcomes")).name
    if isinstance(source.read(0), bytes):
        binary: IO[bytes] = source  # type: ignore[assignment]
        yield io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""), name
    else:
        yield source, name  # type: ignore[misc]


def _column(header: Sequence[str], wanted: Sequence[str]) -> int | None:
    folded = [cell.strip().lstrip("\ufeff").casefold() for cell in header]
    for name in wanted:
        if name.casefold() in folded:
            return folded.index(name.casefold())
    return None


def _flag(text: str) -> bool | None:
    value = text.strip().casefold()
    return True if value in _YES else False if value in _NO else None


def _number(text: str) -> float | None:
    value = text.strip().replace("\u00a0", "").replace(" ", "")
    if not value:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_outcomes(source: str | Path | IO[str] | IO[bytes]) -> pd.DataFrame:
    """Read an outcomes CSV into ``guest, converted, revenue`` (one row per CSV row).

    The guest column is ``guest`` (or ``browserId``, ``email``, ``guestId``: the identity the batch
    sent); ``converted`` takes true/false, yes/no, y/n or 1/0 in any case; ``revenue`` is optional (empty
    means 0). ``,``, ``;`` and tab separators are accepted. Raises ``SampleError`` naming the row, line and
    column of every problem (the first five), so the file can be fixed in one pass.
    """
    try:
        with _text_stream(source) as (stream, name):
            return _read_outcomes(stream, name)
    except UnicodeDecodeError as exc:
        raise SampleError(f"outcomes file is not UTF-8 text ({exc.reason}); save it as 'CSV UTF-8'") from None


def _read_outcomes(stream: IO[str], name: str) -> pd.DataFrame:
    first = stream.readline()
    if not first.strip():
        raise SampleError(
            f"{name}: is empty; the first line must be a header such as 'guest,converted,revenue'"
        )
    if "\x00" in first:
        raise SampleError(f"{name}: is not a CSV file (it looks binary); save it as CSV UTF-8")
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    reader = csv.reader(_chain(first, stream), delimiter=delimiter)
    try:
        header = next(reader)
        guest_at = _column(header, GUEST_COLUMNS)
        converted_at = _column(header, ("converted",))
        revenue_at = _column(header, ("revenue",))
        if guest_at is None or converted_at is None:
            missing = " and ".join(
                m
                for m, at in (
                    ("a guest column (guest, browserId or email)", guest_at),
                    ("converted", converted_at),
                )
                if at is None
            )
            found = ", ".join(c.strip() for c in header[:8]) or "nothing"
            raise SampleError(f"{name}: needs {missing} in the header (found: {found})")
        guests: list[str] = []
        converted: list[bool] = []
        revenue: list[float] = []
        problems: list[RowProblem] = []
        number = 0
        guest_name, converted_name = header[guest_at].strip(), header[converted_at].strip()
        revenue_name = header[revenue_at].strip() if revenue_at is not None else "revenue"
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            number += 1
            line = reader.line_num
            cell = cells + [""] * (len(header) - len(cells))
            guest = cell[guest_at].strip()
            flag = _flag(cell[converted_at])
            amount = _number(cell[revenue_at]) if revenue_at is not None else 0.0
            if not guest:
                problems.append(RowProblem(number, guest_name, "no guest: give the browserId or email", line))
            if flag is None:
                shown = cell[converted_at].strip()
                message = f"'{shown}' is not yes/no, true/false or 1/0" if shown else "empty: write yes or no"
                problems.append(RowProblem(number, converted_name, message, line))
            if amount is None and revenue_at is not None:
                message = f"'{cell[revenue_at].strip()}' is not a number (write 12.50, no currency sign)"
                problems.append(RowProblem(number, revenue_name, message, line))
            if not problems:
                guests.append(guest)
                converted.append(bool(flag))
                revenue.append(float(amount or 0.0))
    except csv.Error as exc:
        raise SampleError(f"{name}, line {reader.line_num}: not a readable CSV ({exc})") from None
    if problems:
        rows = len({p.row for p in problems})
        listed = "; ".join(str(p) for p in problems[:_MAX_LISTED])
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise SampleError(f"{name}: {rows} row(s) need fixing: {listed}{more}")
    if number == 0:
        raise SampleError(f"{name}: has a header but no rows; add one row per guest")
    return pd.DataFrame(
        {
            "guest": pd.Series(guests, dtype=object),
            "converted": pd.Series(converted, dtype=bool),
            "revenue": pd.Series(revenue, dtype=float),
        }
    )


def _chain(first: str, rest: IO[str]) -> Iterator[str]:
    yield first
    yield from rest


def with_outcomes(runs: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The run with ``converted`` and ``revenue`` per guest (0 without an outcome), plus ``true_variant``
    when the outcomes carry it (the sandbox's), for split mapping and detection accuracy.

    ``runs`` is not modified.
    """
    joined = join_outcomes(runs, outcomes)
    if "true_variant" in outcomes.columns:
        keys = pd.Index(outcomes["guest"].astype(str))
        first = ~keys.duplicated()
        lookup = pd.Index(keys[first])
        truths = outcomes["true_variant"].astype(str).to_numpy(dtype=object)[first]
        position = lookup.get_indexer(pd.Index(runs["guest"].astype(str)))
        values = np.where(position >= 0, truths[np.maximum(position, 0)], "")
        joined["true_variant"] = pd.Series(values, index=joined.index, dtype=object)
    return joined


# ---- variants of the flow, labels of the run ------------------------------------------------------------


def _variants(flow_summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(v) for v in flow_summary.get("variants") or [] if isinstance(v, Mapping) and v.get("name")]


def _served_labels(runs: pd.DataFrame) -> pd.Series:
    ok = runs["ok"].fillna(False).astype(bool) if "ok" in runs.columns else pd.Series(True, index=runs.index)
    labels = runs["variant"].astype(object).where(runs["variant"].notna(), "").astype(str)
    return labels[ok & (labels != "")]


def _by_name(label: str, variants: Sequence[Mapping[str, Any]]) -> str | None:
    folded = label.strip().casefold()
    for variant in variants:
        if folded in (str(variant["name"]).casefold(), str(variant.get("ref") or "").casefold()):
            return str(variant["name"])
    prefixed = [
        str(v["name"])
        for v in variants
        if str(v["name"]).casefold().startswith(folded)
        and _NAME_SEPARATORS.match(str(v["name"])[len(folded) : len(folded) + 1] or "x")
    ]
    return prefixed[0] if len(prefixed) == 1 else None


def label_variants(flow_summary: Mapping[str, Any], runs: pd.DataFrame) -> dict[str, str]:
    """Which flow variant each detected label stands for: ``{"A": "A – Free shipping", …}``.

    With a ``true_variant`` column (the sandbox's truth, from :func:`with_outcomes`), each label maps to
    the true variant it most often stands for. Otherwise a label maps to a variant it names: exactly (name
    or ref, any case) or as the name's first word (``A`` → ``A – Free shipping``). Unmatched labels are
    left out: they are not one of the flow's variants (``(No matching variant)``, errors).
    """
    variants = _variants(flow_summary)
    labels = _served_labels(runs)
    names = {str(v["name"]) for v in variants}
    if "true_variant" in runs.columns:
        truth = runs.loc[labels.index, "true_variant"].astype(str)
        known = truth.isin(names)
        if known.any():
            pairs = pd.DataFrame({"label": labels[known], "truth": truth[known]})
            counts = pairs.groupby(["label", "truth"], sort=True).size().reset_index(name="n")
            best = counts.sort_values(["label", "n"], ascending=[True, False], kind="stable")
            return dict(best.drop_duplicates("label")[["label", "truth"]].itertuples(index=False, name=None))
    mapping = {}
    for label in sorted(set(labels)):
        name = _by_name(label, variants)
        if name is not None:
            mapping[label] = name
    return mapping


def expected_shares(flow_summary: Mapping[str, Any], runs: pd.DataFrame | None = None) -> dict[str, float]:
    """Expected share per detected label, from the flow's variant splits (for ``analysis.split_health``).

    Without ``runs``: the variants' own names and shares. With ``runs``, labels are matched to variants by
    :func:`label_variants`; a variant no label matched keeps its name, so that a variant nobody got still
    counts as missing in the test. When several labels stand for one variant (personalised bodies), its
    share is divided between them in the proportion they were seen: the test then checks the variants'
    shares, not how each variant's content varied. When no label matches any variant, every observed label
    is expected to get an equal share (the same as ``split_health`` with no expectation).
    """
    variants = _variants(flow_summary)
    splits = {str(v["name"]): float(v.get("split") or 0.0) for v in variants}
    total = sum(splits.values())
    if total <= 0:
        return {}
    shares = {name: split / total for name, split in splits.items() if split > 0}
    if runs is None:
        return shares
    mapping = label_variants(flow_summary, runs)
    labels = _served_labels(runs)
    if not mapping:
        seen = sorted(set(labels))
        return {label: 1 / len(seen) for label in seen} if seen else shares
    counts = labels[labels.isin(list(mapping))].value_counts()
    result: dict[str, float] = {}
    for name, share in shares.items():
        mine = [label for label, variant in mapping.items() if variant == name]
        if not mine:
            result[name] = share
            continue
        seen_total = sum(int(counts.get(label, 0)) for label in mine)
        for label in mine:
            weight = int(counts.get(label, 0)) / seen_total if seen_total else 1 / len(mine)
            result[label] = share * weight
    return result


def control_label(flow_summary: Mapping[str, Any], runs: pd.DataFrame) -> str | None:
    """The detected label of the flow's control variant (``isControl``), or None when none matches."""
    controls = {str(v["name"]) for v in _variants(flow_summary) if v.get("isControl")}
    mapping = label_variants(flow_summary, runs)
    found = sorted(label for label, name in mapping.items() if name in controls)
    return found[0] if found else None


def true_lifts(flow_definition: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, float]:
    """The lift each label truly has over the control on the sandbox, from its flow definition.

    The sandbox draws conversions with probability ``propensity × conversionLift`` (the hidden
    ``variant["sandbox"]`` of its demo flows), so the true relative lift of a variant over the control is
    ``conversionLift / control's conversionLift − 1``: the number an estimate should recover. ``labels``
    maps detected labels to variant names (:func:`label_variants`). Empty for flows without that truth.
    """
    lifts: dict[str, float] = {}
    control: float | None = None
    for variant in _variants(flow_definition):
        truth = variant.get("sandbox")
        if not isinstance(truth, Mapping) or "conversionLift" not in truth:
            return {}
        lifts[str(variant["name"])] = float(truth["conversionLift"])
        if variant.get("isControl"):
            control = float(truth["conversionLift"])
    if not control:
        return {}
    return {label: lifts[name] / control - 1 for label, name in labels.items() if name in lifts}


# ---- lift in words --------------------------------------------------------------------------------------


def _percent(value: float, *, signed: bool = False) -> str:
    text = f"{abs(value) * 100:.0f}%" if abs(value) >= 0.095 else f"{abs(value) * 100:.1f}%"
    if not signed:
        return text
    return ("−" if value < 0 else "+") + text


def _p(p_value: float) -> str:
    if not math.isfinite(p_value):
        return "p not available"
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {p_value:.3f}" if p_value < 0.01 else f"p = {p_value:.2f}"


def lift_sentences(conversion: pd.DataFrame, *, confidence: float = 0.95, alpha: float = 0.05) -> list[str]:
    """One plain sentence per variant against the control, from ``analysis.conversion_by_variant``.

    e.g. "B converts 24% better than A (6.2% vs 5.0% of guests; 95% CI 12% to 37%, p < 0.001): unlikely
    to be chance." The closing clause reads the interval, which is what a marketer acts on: if it excludes
    zero the difference is called real at that confidence, if it spans zero it could be chance.
    """
    if conversion.empty:
        return []
    control_rows = conversion[conversion["is_control"].astype(bool)]
    if control_rows.empty:
        return []
    control = control_rows.iloc[0]
    level = f"{confidence * 100:.0f}%"
    sentences = []
    for _, row in conversion[~conversion["is_control"].astype(bool)].iterrows():
        name, base = str(row["variant"]), str(control["variant"])
        rates = f"{_percent(float(row['rate']))} vs {_percent(float(control['rate']))} of guests"
        lift, low, high = float(row["lift"]), float(row["lift_low"]), float(row["lift_high"])
        if not math.isfinite(lift):
            sentences.append(f"{name} cannot be compared with {base} yet: {base} has no conversions.")
            continue
        if not (math.isfinite(low) and math.isfinite(high)):
            sentences.append(f"{name} vs {base}: {rates}; too few conversions for an interval yet.")
            continue
        direction = "better" if lift >= 0 else "worse"
        same_side = low > 0 or high < 0
        interval = (
            f"{_percent(low)} to {_percent(high)}"
            if low > 0
            else f"{_percent(low, signed=True)} to {_percent(high, signed=True)}"
        )
        p_value = float(row["p_value"])
        if same_side and p_value < alpha:
            verdict = "unlikely to be chance."
        elif same_side:
            verdict = "probably real, but close to the edge."
        else:
            verdict = "this could be chance; more guests would tell."
        sentences.append(
            f"{name} converts {_percent(lift)} {direction} than {base} ({rates}; {level} CI {interval}, "
            f"{_p(p_value)}): {verdict}"
        )
    return sentences
