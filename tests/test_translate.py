"""Report normalisation: German/Swedish phrase table, English clean-up, coverage on the whole table."""

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from melp.data import translate as tr

ROOT = Path(__file__).parents[1] / "data" / "ptbxl-mini"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sinusrhythmus lagetyp normal normales ekg", "sinus rhythm. normal axis. normal ecg."),
        # version stamp dropped, upper-case umlaut, statements separated by runs of spaces
        (
            "sinusrhythmus linkstyp qrs(t) abnorm    inferiorer infarkt     alter unbest. 4.46"
            "                          unbestÄtigter bericht",
            "sinus rhythm. left axis deviation. qrs(t) abnormal. inferior infarction. age undetermined. "
            "unconfirmed report.",
        ),
        ("sinusrhythmus periphere niederspannung", "sinus rhythm. low limb lead voltage."),
        (
            "sinusrhythmus lagetyp normal unvollstÄndiger rechtsschenkelblock sonst normales ekg",
            "sinus rhythm. normal axis. incomplete right bundle branch block. otherwise normal ecg.",
        ),
        # ae spelling of ä, '#' for ü, digits and lead lists kept
        (
            "sinusrhythmus ueberdrehter linkstyp st-senkung in v3-6 mÄssige amplitudenkriterien f#r linkshypertrophie",
            "sinus rhythm. abnormal left axis deviation. st depression in v3-6 moderate voltage criteria for left "
            "ventricular hypertrophy.",
        ),
        (
            "sinusrhythmus lagetyp normal qrs(t) abnorm    inferiorer myokardschaden mÖglich",
            "sinus rhythm. normal axis. qrs(t) abnormal. inferior myocardial damage possible.",
        ),
        (
            "supraventrikulÄre extrasystole(n) sinusrhythmus verdacht auf p-sinistrocardiale lagetyp normal",
            "supraventricular extrasystole(s). sinus rhythm. suspected left atrial enlargement. normal axis.",
        ),
        (
            "sinusrytm vÄnster el-axel inget sÄkert patologiskt",
            "sinus rhythm. left axis deviation. no definite pathology.",
        ),
        # English: light clean-up only; the 'Edit:' annotation (SCP codes = labels) is removed
        (
            "sinus rhythm. possible left atrial enlargement. Edit: LAO 50",
            "sinus rhythm. possible left atrial enlargement.",
        ),
        (
            "Sinus rhythm, with sinus arrhythmia.. EKG within normal limits",
            "sinus rhythm, with sinus arrhythmia. ecg within normal limits.",
        ),
        (
            "non-specific t wave flattening in i, avl, v4,5,6.",
            "non-specific t wave flattening in i, avl, v4,5,6.",
        ),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize_report_examples(raw, expected):
    assert tr.normalize_report(raw) == expected


def test_language_detection():
    assert tr.detect_language("sinusrhythmus normales ekg") == "de"
    assert tr.detect_language("sinusrytm normalt ekg") == "sv"
    assert tr.detect_language("sinus rhythm. left axis deviation. leads i, ii, iii") == "en"
    assert tr.detect_language("4.46") == "empty"


def test_untranslated_words():
    assert tr.untranslated_words("sinus rhythm. normal ecg.") == []
    assert tr.untranslated_words("sinus rhythm. cordichin given.") == ["cordichin"]  # a drug name
    assert "schlimm" in tr.untranslated_words("sinus rhythm schlimm")


def test_table_is_well_formed():
    text = (Path(tr.__file__).parent / "resources" / "ptbxl_phrases.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    assert all(len(r) == 3 for r in rows)
    assert {r[0] for r in rows} == {"de", "de-adj", "sv", "en"}
    keys = Counter((r[0], r[1]) for r in rows)
    assert [k for k, n in keys.items() if n > 1] == []  # no duplicate (conflicting) entries
    assert all(r[1] == r[1].lower() and r[1].strip() == r[1] for r in rows)
    table = tr.load_table()["foreign"]
    # adjective endings and spelling variants are generated
    assert table["inferiorer"] == table["inferioren"] == "inferior"
    assert table["unvollstaendiger rechtsschenkelblock"] == "incomplete right bundle branch block."


def test_coverage_on_whole_table():
    """Measured on all 21,837 rows of ptbxl_database.csv (see the report figures printed)."""
    reports = pd.read_csv(ROOT / "ptbxl_database.csv", usecols=["report"])["report"].fillna("")
    langs = Counter(tr.detect_language(t) for t in reports)
    assert langs["de"] + langs["sv"] + langs["en"] + langs["empty"] == 21837
    assert 13500 < langs["de"] < 14500 and 500 < langs["sv"] < 800 and langs["empty"] == 2
    de = tr.coverage(reports, ("de",))
    sv = tr.coverage(reports, ("sv",))
    print(
        f"\nGerman: {de['fully_translated']}/{de['reports']} fully translated ({de['fraction']:.1%}); "
        f"Swedish: {sv['fully_translated']}/{sv['reports']} ({sv['fraction']:.1%})"
    )
    assert de["fraction"] >= 0.97  # measured 0.977 (13,670 / 13,996)
    assert sv["fraction"] >= 0.93  # measured 0.942
