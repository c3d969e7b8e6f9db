"""The thresholds the statistics apply and FINDINGS states, each defined once.

The statistics (stats/, run/) apply them when they write their tables; the report states them
in its text (report.render passes them to every template) and never computes with them what a
table already says. A threshold that only one side needs stays with that side.
"""

from __future__ import annotations

import math

# --------------------------------------------------------------------------- the hypothesis
#: A component passes a criterion of the seed's hypothesis when its r exceeds this.
R_THRESHOLD = 0.8
#: The hypothesis holds when at least this many of its four criteria pass.
HYPOTHESIS_MIN_PASSING = 2
#: Pearson r is N/A (the seed's rule) below this many usable rows, or at zero variance.
MIN_ROWS = 10
#: A step is prefill-dominated when at least this share of its physical component time is
#: prefill (stats.correlation.prefill_dominated).
PREFILL_DOMINATED_SHARE = 0.9
#: A median over fewer experiments with a usable r is one or two experiments' r, not a
#: typical within-experiment value: N/A below this count.
WITHIN_MIN_EXPERIMENTS = 3

# --------------------------------------------------------------------------- what explains each target
#: Steps whose target lies above this quantile of its experiment are left out of every fit.
TRIM_QUANTILE = 0.99
#: An incremental R² whose interval lies above this is credited to its set.
INCREMENT_MIN = 0.02

# --------------------------------------------------------------------------- component attribution
#: Two group regressors whose |Pearson r| over an experiment's steps reaches this cannot be
#: separated: the fit cannot tell their effects apart (r² ≥ 0.9 of each one's variance is
#: the other's).
INSEPARABLE_ABS_R = 0.95
#: Slack for rounding when checking that an LMG share lies in [0, 1] (artefacts.write_table
#: keeps FLOAT_SIG_DIGITS significant digits).
SHARE_TOLERANCE = 1e-6


def valid_share(x: object) -> bool:
    """An LMG share that lies in [0, 1] up to SHARE_TOLERANCE (NaN and non-numbers: False).
    The attribution summaries count only such shares, and FINDINGS shows only them."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return not math.isnan(v) and -SHARE_TOLERANCE <= v <= 1 + SHARE_TOLERANCE


# --------------------------------------------------------------------------- sensitivity
#: ``make sensitivity`` draws each kernel family's cost factor from [1 − spread, 1 + spread].
SENSITIVITY_SPREAD = 0.20
#: A within-experiment statistic of the headlines needs this many steps with both values.
MIN_STEPS_PER_EXPERIMENT = 10
