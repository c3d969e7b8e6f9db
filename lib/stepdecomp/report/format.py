"""Formatting of the report's numbers: the ``fmt_*`` functions (Jinja filters and globals)
and :func:`markdown_table`. A missing value (None, NaN) prints as N/A everywhere."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import pandas as pd


def isnan(x: object) -> bool:
    try:
        return x is None or math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_r(r: float) -> str:
    return "N/A" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{r:.4f}"


def fmt_int(n: float) -> str:
    return "N/A" if isnan(n) else f"{int(n):,}"


def fmt_pct(p: float) -> str:
    """Percent with enough digits to show small shares (0.005%) and 3 significant digits;
    N/A when missing (a share of no steps)."""
    if isnan(p):
        return "N/A"
    if p == 0:
        return "0%"
    return f"{p:.3g}%" if p >= 0.01 else f"{p:.1g}%"


def fmt_ci(low: float, high: float) -> str:
    """A bootstrap interval as [low, high] with 3 decimals, N/A when missing."""
    return "N/A" if isnan(low) or isnan(high) else f"[{low:.3f}, {high:.3f}]"


def fmt_r3(r: float) -> str:
    return "N/A" if isnan(r) else f"{r:.3f}"


def fmt_num(x: float, digits: int = 3) -> str:
    """A coefficient: ``digits`` significant digits (N/A when missing)."""
    return "N/A" if isnan(x) else f"{x:.{digits}g}"


def fmt_us(x: float) -> str:
    return "N/A" if isnan(x) else f"{x:,.0f}"


def fmt_frac(x: float) -> str:
    """A fraction in [0, 1] shown as a percentage (fmt_pct's digits)."""
    return "N/A" if isnan(x) else fmt_pct(100.0 * float(x))


def fmt_share(x: float) -> str:
    """A signed share (fraction) as a percentage with 3 significant digits."""
    if isnan(x):
        return "N/A"
    return "0%" if x == 0 else f"{100.0 * float(x):.3g}%"


def fmt_share_pct(x: float) -> str:
    """A share in [0, 1] as a percentage with one decimal (57.5%), N/A when missing."""
    return "N/A" if isnan(x) else f"{100.0 * float(x):.1f}%"


def fmt_delta(d: float) -> str:
    """A signed change of r with 3 decimals (+0.250), N/A when missing."""
    return "N/A" if isnan(d) else f"{d:+.3f}"


def fmt_f2(x: float) -> str:
    return f"{x:.2f}"


def fmt_f3(x: float) -> str:
    return f"{x:.3f}"


def fmt_g(x: float) -> str:
    return f"{x:g}"


def fmt_cmp(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)  # type: ignore[arg-type]
    return f"{int(x):,}" if x.is_integer() and abs(x) >= 1 else f"{x:.4g}"


#: The column of every statistics table that says why its N/A cells are N/A.
REASON_COLUMN = "na_reason"
#: Its header when a table shows it (last, and only when some row has a reason).
REASON_HEADER = "why N/A"


def reasons(frame: pd.DataFrame) -> pd.Series:
    """The ``na_reason`` column as text ("" where a table read back from CSV has an empty
    cell; all "" without the column)."""
    if REASON_COLUMN not in frame:
        return pd.Series("", index=frame.index)
    return frame[REASON_COLUMN].astype(object).where(frame[REASON_COLUMN].notna(), "").astype(str)


def markdown_table(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]] | None = None,
                   headers: Sequence[str] | Mapping[str, str] | None = None) -> str:
    """A markdown table of ``frame``; ``headers`` is a list in column order, or a mapping
    from column to header (for tables whose columns vary). The ``na_reason`` column is not
    one of them: it is shown last, headed REASON_HEADER, when some row has a reason."""
    formats = formats or {}
    columns = [c for c in frame.columns if c != REASON_COLUMN]
    if isinstance(headers, Mapping):
        headers = [headers[c] for c in columns]
    headers = list(headers or columns)
    why = reasons(frame)
    show_why = bool((why != "").any())
    if show_why:
        headers.append(REASON_HEADER)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = [formats.get(c, str)(row[c]) for c in columns]
        if show_why:
            cells.append(why.iloc[i].replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Formatters, registered as Jinja filters and as globals (for markdown_table's formats).
FORMATTERS: dict[str, Callable[..., str]] = {
    "fmt_r": fmt_r, "fmt_int": fmt_int, "fmt_pct": fmt_pct, "fmt_ci": fmt_ci, "fmt_r3": fmt_r3,
    "fmt_num": fmt_num, "fmt_us": fmt_us, "fmt_frac": fmt_frac, "fmt_share": fmt_share,
    "fmt_delta": fmt_delta, "fmt_share_pct": fmt_share_pct, "fmt_f2": fmt_f2, "fmt_f3": fmt_f3,
    "fmt_g": fmt_g, "fmt_cmp": fmt_cmp}
