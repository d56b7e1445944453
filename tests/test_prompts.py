"""The shipped zero-shot prompts: complete, clean, clinically consistent (fixes of D12)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from melp.data.tasks import BENCHMARK_TASKS as TASK_CLASSES
from melp.data.tasks import canonical_task
from melp.eval.prompts import load_prompts, prompts_for

DATA = Path(__file__).parents[1] / "data"
PROMPTS = load_prompts()

FORBIDDEN = ["let me know", "i generated", "based on the input", "requirements", "as an ai", "..", "  ", "?"]
# opposite findings that must never share one class's phrasings
OPPOSITES = [
    ("clockwise", "counterclockwise"),
    ("depression", "elevation"),
    ("depressed", "elevated"),
    ("tachycardia", "bradycardia"),
    ("left axis", "right axis"),
]
ABNORMAL_WORDS = [
    "infarction",
    "block",
    "hypertrophy",
    "tachycardia",
    "bradycardia",
    "fibrillation",
    "ischaemia",
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text))


def test_task_class_lists_match_published_split_headers():
    for task in ["super_class", "sub_class", "form", "rhythm"]:
        # order of the train files (appendix C); the sub_class val file permutes three columns (D8)
        train = pd.read_csv(DATA / "splits" / "ptbxl" / f"ptbxl_{task}_train.csv", nrows=0).columns
        val = pd.read_csv(DATA / "splits" / "ptbxl" / f"ptbxl_{task}_val.csv", nrows=0).columns
        assert list(train[6:]) == TASK_CLASSES[f"ptbxl_{task}"]
        assert sorted(val[6:]) == sorted(TASK_CLASSES[f"ptbxl_{task}"])
    for task in ["icbeb", "chapman"]:
        header = pd.read_csv(DATA / "splits" / f"{task}_val.csv", nrows=0).columns
        assert list(header[7 if task == "icbeb" else 3 :]) == TASK_CLASSES[task]
    assert len(TASK_CLASSES["code15"]) == 6


@pytest.mark.parametrize("task", sorted(TASK_CLASSES))
def test_every_class_has_several_distinct_clean_prompts(task):
    classes = TASK_CLASSES[task]
    assert len(classes) == len(set(classes))
    seen: dict[str, str] = {}
    for code, phrasings in zip(classes, prompts_for(classes, PROMPTS)):
        assert len(phrasings) >= 2, code
        assert len(set(phrasings)) == len(phrasings), f"duplicate phrasing in {code}"
        for p in phrasings:
            assert p == p.lower().strip(), (code, p)
            assert p.endswith("."), (code, p)  # report register: statements end with a period
            assert not any(bad in p for bad in FORBIDDEN), (code, p)
            # two classes of one task must not share a phrasing (they would be indistinguishable)
            assert seen.setdefault(p, code) == code, f"{code} and {seen[p]} share {p!r}"
        text = " ".join(phrasings)
        for a, b in OPPOSITES:
            assert not (a in text and re.search(rf"\b{b}\b", text) and re.search(rf"\b{a}\b", text)), (
                code,
                a,
                b,
            )


def test_normal_class_mentions_no_abnormal_finding():
    words = _words(" ".join(PROMPTS["NORM"]))
    assert not words & set(ABNORMAL_WORDS)


def test_prompt_words_are_spelled_as_in_real_reports_or_scp_descriptions():
    """Catch typos: every word must occur in the PTB-XL English reports, the SCP statement
    descriptions, the Challenge 2021 names, or a short list of standard terms."""
    db = pd.read_csv(DATA / "ptbxl-mini" / "ptbxl_database.csv", usecols=["report"])
    scp = pd.read_csv(DATA / "ptbxl-mini" / "scp_statements.csv")
    dx = pd.read_csv(DATA / "real-format-samples" / "challenge2021_dx_mapping.csv")
    corpus = " ".join(db["report"].dropna().str.lower()) + " " + " ".join(scp["description"].str.lower())
    corpus += " " + " ".join(dx["dx_name"].str.lower())
    # the English side of the PTB-XL translation table (what translated reports say)
    table = Path(__file__).parents[1] / "src" / "melp" / "data" / "resources" / "ptbxl_phrases.tsv"
    if table.exists():
        rows = [
            ln.split("\t") for ln in table.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")
        ]
        corpus += " " + " ".join(r[2].lower() for r in rows if len(r) >= 3)
    vocab = _words(corpus)
    extra = {
        "wenckebach",
        "mobitz",
        "upward",
        "upsloping",
        "tilted",
        "sloping",
        "pulmonale",
        "pre",
        "excitation",
        "pattern",
        "strain",
        "afib",
        "svt",
        "lbbb",
        "rbbb",
        "ivcd",
        "ilbbb",
        "sagging",
        "notched",
        "morphology",
        "leftward",
        "regular",
        "electrolyte",
        "above",
        "below",
        "duration",
        "ectopic",
        "electrocardiogram",
        "electronic",
        "extrasystoles",
        "peaked",
        "rsr'",
        "shifted",
    }
    unknown = {w for ps in PROMPTS.values() for p in ps for w in _words(p)} - vocab - extra
    assert not unknown, f"words not found in any reference text (typo?): {sorted(unknown)}"


def test_user_prompt_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"NORM": "normal ecg.", "MI": ["myocardial infarction.", " old infarct. "]}))
    p = load_prompts(f)
    assert p == {"NORM": ["normal ecg."], "MI": ["myocardial infarction.", "old infarct."]}
    with pytest.raises(KeyError, match="HYP"):
        prompts_for(["NORM", "HYP"], p)
    f.write_text(json.dumps({"NORM": []}))
    with pytest.raises(ValueError, match="NORM"):
        load_prompts(f)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_prompts(tmp_path / "nope.json")


def test_task_aliases():
    assert TASK_CLASSES[canonical_task("super_class")] == ["HYP", "NORM", "MI", "CD", "STTC"]
    assert canonical_task("cpsc") == "icbeb" and canonical_task("rhythm") == "ptbxl_rhythm"
    assert canonical_task("mimic") == "mimic"  # not a benchmark task: unchanged


def test_task_scoped_prompt_overrides_plain_code():
    table = {"AF": ["atrial flutter."], "dx:AF": ["atrial fibrillation."]}
    assert prompts_for(["AF"], table) == [["atrial flutter."]]
    assert prompts_for(["AF"], table, task="dx") == [["atrial fibrillation."]]
    assert prompts_for(["AF"], table, task="chapman") == [["atrial flutter."]]
