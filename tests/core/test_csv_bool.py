"""core.artefacts.csv_bool: the one reading of a flag column, as written and as read back."""

import pandas as pd

from stepdecomp.core.artefacts import csv_bool, write_csv


def test_flags_survive_a_csv_round_trip(tmp_path):
    frame = pd.DataFrame({"flagged": [True, False, True]})
    back = pd.read_csv(write_csv(frame, tmp_path / "t.csv"))
    assert csv_bool(back["flagged"]).tolist() == [True, False, True]
    flags = frame["flagged"]
    assert csv_bool(flags) is flags                    # a bool column is returned as it is


def test_strings_and_numbers_read_as_flags():
    s = pd.Series(["True", " false", "1", "0", "yes", "", None, "TRUE"])
    assert csv_bool(s).tolist() == [True, False, True, False, True, False, False, True]
