"""The hypothesis verdict as a value, and the tables that carry verdicts from the statistics
to the report.

stats.correlation decides a verdict (which criteria pass, against core.thresholds); this module
defines what a verdict is — its criteria and counts, and the label, words and status the text
gives it — and how notebook 04 writes verdicts (:func:`verdict_rows`, one row per criterion
with the verdict's outcome on every row) and the report reads them back
(:func:`read_verdicts`), unchanged.

Two tables: ``verdicts_pooled`` (the seed's verdict on its own pure-phase table, kind
``seed``, and the physical verdict of each target and prefill subset, kind ``physical``) and
``verdicts_within`` (the within-experiment verdict of each target and prefill subset, kind
``within``). Their key columns are :data:`KEY_COLUMNS`, the criteria's columns those of
:data:`CRITERIA_COLUMNS` for the kind, then the outcome :data:`OUTCOME_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .thresholds import HYPOTHESIS_MIN_PASSING, R_THRESHOLD

#: Verdict labels when criteria cannot be judged: every one N/A, or enough N/A to tip it.
VERDICT_NA = "N/A"
VERDICT_INDETERMINATE = "INDETERMINATE"
VERDICT_WORDS = {"SUPPORTED": "supported", "NOT SUPPORTED": "not supported",
                 VERDICT_INDETERMINATE: "indeterminate",
                 VERDICT_NA: "not testable (every criterion N/A)"}
VERDICT_STATUS = {"SUPPORTED": "Supported", "NOT SUPPORTED": "Not Supported",
                  VERDICT_INDETERMINATE: "Indeterminate",
                  VERDICT_NA: "Not Testable (every criterion N/A)"}


@dataclass(frozen=True)
class Verdict:
    """The hypothesis check: which of the four criteria reach r > R_THRESHOLD."""

    table: pd.DataFrame          # subset, component, pearson_r, n_steps, passed
    passing: int
    required: int = HYPOTHESIS_MIN_PASSING
    #: criteria whose r (or median r) is N/A: they can be judged neither way
    n_na: int = 0
    #: False for the seed's own verdict, kept as the seed ran it (an N/A criterion does not
    #: pass); True for the physical ones, INDETERMINATE when N/A criteria could tip it
    indeterminate: bool = False

    @property
    def supported(self) -> bool:
        return self.passing >= self.required

    @property
    def judged(self) -> bool:
        """Whether the criteria decide: supported, or too few could pass even if every N/A
        one did (always, under the seed's rule: ``indeterminate`` False)."""
        return (self.supported or not self.indeterminate
                or self.passing + self.n_na < self.required)

    @property
    def label(self) -> str:
        """SUPPORTED / NOT SUPPORTED; VERDICT_NA when every criterion is N/A;
        VERDICT_INDETERMINATE when the N/A criteria could still tip it (``indeterminate``)."""
        if self.supported:
            return "SUPPORTED"
        if self.n_na and self.n_na == len(self.table):
            return VERDICT_NA
        return "NOT SUPPORTED" if self.judged else VERDICT_INDETERMINATE

    @property
    def words(self) -> str:
        """The label in running prose ("the hypothesis is …")."""
        return VERDICT_WORDS[self.label]

    @property
    def status(self) -> str:
        """The label as a status line ("Not Supported")."""
        return VERDICT_STATUS[self.label]

    def na_note(self) -> str:
        """" (k of n criteria N/A)" when some are, else ""."""
        return f" ({self.n_na} of {len(self.table)} criteria N/A)" if self.n_na else ""

    def sentence(self) -> str:
        return (f"{self.passing}/{len(self.table)} components reach r > {R_THRESHOLD} on their "
                f"pure-phase subset (at least {self.required} needed){self.na_note()}: "
                f"{self.label}.")


@dataclass(frozen=True)
class WithinVerdict(Verdict):
    """The seed's criterion on within-experiment medians (stats.correlation
    .within_experiment_verdict)."""

    def sentence(self) -> str:
        return (f"{self.passing}/{len(self.table)} components have a median within-experiment "
                f"r > {R_THRESHOLD} on their subset (at least {self.required} needed)"
                f"{self.na_note()}: {self.label}.")


# --------------------------------------------------------------------------- the tables

#: The kinds of verdict: the seed's on its own components (pooled), the physical one pooled
#: over experiments, the physical one within experiments.
SEED, PHYSICAL, WITHIN = "seed", "physical", "within"
#: Which verdict a row belongs to: its kind, the step-time target and the prefill subset the
#: prefill criteria are taken on.
KEY_COLUMNS = ["verdict", "target", "prefill_subset"]
#: Each kind's criteria columns, in the order the verdict's table has them.
CRITERIA_COLUMNS = {
    SEED: ["subset", "component", "pearson_r", "n_steps", "na_reason", "passed"],
    PHYSICAL: ["subset", "component", "pearson_r", "n_steps", "passed"],
    WITHIN: ["subset", "component", "median_r", "ci_low", "ci_high", "n_experiments", "passed"]}
#: The verdict's outcome, repeated on each of its criteria (label and supported follow from
#: the counts; they are there for the reader of the CSV).
OUTCOME_COLUMNS = ["passing", "required", "n_na", "indeterminate", "label", "supported"]
#: The count columns of the criteria, integers wherever no criterion lacks one.
_COUNTS = ("n_steps", "n_experiments")


def verdict_rows(v: Verdict, verdict: str, target: str, prefill_subset: str) -> pd.DataFrame:
    """The rows of one verdict in a verdict table: KEY_COLUMNS, the kind's CRITERIA_COLUMNS
    (a column the verdict's table lacks is empty) and OUTCOME_COLUMNS."""
    if verdict not in CRITERIA_COLUMNS:
        raise ValueError(f"unknown verdict kind {verdict!r}; known: {', '.join(CRITERIA_COLUMNS)}")
    criteria = v.table.reindex(columns=CRITERIA_COLUMNS[verdict])
    keys = pd.DataFrame({"verdict": verdict, "target": target, "prefill_subset": prefill_subset},
                        index=criteria.index)
    outcome = pd.DataFrame({"passing": v.passing, "required": v.required, "n_na": v.n_na,
                            "indeterminate": v.indeterminate, "label": v.label,
                            "supported": v.supported}, index=criteria.index)
    return pd.concat([keys, criteria, outcome], axis=1).reset_index(drop=True)


def verdict_table(rows: list[pd.DataFrame]) -> pd.DataFrame:
    """Verdicts' rows (:func:`verdict_rows`) stacked: KEY_COLUMNS, the criteria columns of the
    kinds present (those of the first kind first), OUTCOME_COLUMNS."""
    frames = [r for r in rows if len(r)]
    if not frames:
        return pd.DataFrame(columns=KEY_COLUMNS + OUTCOME_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    kinds = dict.fromkeys(out["verdict"])              # the first kind's columns lead
    criteria = dict.fromkeys(c for k in kinds for c in CRITERIA_COLUMNS[k])
    return out[[*KEY_COLUMNS, *criteria, *OUTCOME_COLUMNS]]


def read_verdicts(table: pd.DataFrame, name: str = "verdict table"
                  ) -> dict[tuple[str, str, str], Verdict]:
    """Every verdict of a verdict table, keyed (verdict, target, prefill_subset), as it was
    written: the kind's criteria columns in their order (counts as integers where none is
    missing) and the outcome's counts. A KeyError names ``name`` and the columns it lacks."""
    missing = [c for c in KEY_COLUMNS + OUTCOME_COLUMNS if c not in table]
    if missing:
        raise KeyError(f"{name} lacks column(s) {missing}")
    out: dict[tuple[str, str, str], Verdict] = {}
    for key, rows in table.groupby(KEY_COLUMNS, sort=False, dropna=False):
        kind = str(key[0])
        if kind not in CRITERIA_COLUMNS:
            raise ValueError(f"{name}: unknown verdict kind {kind!r}")
        lacking = [c for c in CRITERIA_COLUMNS[kind] if c not in rows]
        if lacking:
            raise KeyError(f"{name} lacks column(s) {lacking} of the {kind} verdict")
        criteria = rows[CRITERIA_COLUMNS[kind]].reset_index(drop=True)
        for c in _COUNTS:
            if c in criteria and criteria[c].notna().all():
                criteria[c] = criteria[c].astype(int)
        criteria["passed"] = criteria["passed"].map(_bool).astype(bool)
        first = rows.iloc[0]
        cls = WithinVerdict if kind == WITHIN else Verdict
        out[(kind, str(key[1]), str(key[2]))] = cls(
            table=criteria, passing=int(first["passing"]), required=int(first["required"]),
            n_na=int(first["n_na"]), indeterminate=_bool(first["indeterminate"]))
    return out


def _bool(x: object) -> bool:
    """A boolean cell, as written or read back from CSV (True / "True")."""
    return x if isinstance(x, bool) else str(x).strip().lower() in ("true", "1")
