"""Bad input through the command line: `melp prepare`, `verify` and the evaluation commands.

Every case must end with ONE clear line on stderr (``melp CMD: error: ...``, no traceback), a
non-zero exit code, and no partial output (the --out folder / file is not created; a store that
was there keeps every byte).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_builders import MIMIC_LEADS, ecg_like

from melp.cli import main
from melp.data.store import ECGStore, prepare

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A PTB-XL mini store at the tiny model's rate (100 Hz x 10 s), the same records at 500 Hz, a
    generic store whose fold 2 is not labelled, and the saved tiny model."""
    import melp
    from melp.data.readers.ptbxl import subset_root

    tmp = tmp_path_factory.mktemp("eval_bad")
    root = subset_root(DATA / "ptbxl-mini", tmp / "ptbxl", per_fold=2)
    prepare("ptbxl", root, tmp / "store", progress=False)
    prepare("ptbxl", root, tmp / "store500", rate=500, progress=False)
    gen = tmp / "gen"
    gen.mkdir()
    rows = []
    for k in range(9):  # folds 1 and 3 labelled, fold 2 not labelled for the task
        np.save(gen / f"g{k}.npy", ecg_like(12, 1000, seed=k))
        (gen / f"g{k}.json").write_text(json.dumps({"leads": MIMIC_LEADS, "rate": 100}))
        fold = 1 + k % 3
        cells = ("", "") if fold == 2 else (str(k % 2), str(1 - k % 2))
        rows.append(
            {"file": f"g{k}.npy", "report": "sinus rhythm", "fold": fold, "NORM": cells[0], "AFIB": cells[1]}
        )
    pd.DataFrame(rows).to_csv(gen / "records.csv", index=False)
    prepare("generic", gen, tmp / "gstore", progress=False)
    torch.manual_seed(0)
    melp.create_model("melp-test").save_pretrained(tmp / "model")
    return tmp


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse usage errors
        rc = stop.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"melp {command}") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def _model(env):
    return ["--model", env / "model", "--device", "cpu"]


EVAL_CASES = [
    # (name, command, argv after the command, exit code, message)
    (
        "wrong rate for the model",
        "zeroshot",
        ["--data", "store500", "--task", "super_class"],
        1,
        "holds 500 Hz x 5000 samples but the model expects 100 Hz",
    ),
    ("task the store lacks", "zeroshot", ["--data", "store", "--task", "icbeb"], 1, "no task 'icbeb'"),
    (
        "a lacking task after a good one",
        "zeroshot",
        ["--data", "store", "--task", "rhythm", "nosuch"],
        1,
        "no task 'nosuch'",
    ),
    (
        "empty fold",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--folds", "10"],
        1,
        r"no records in folds \[10\]",
    ),
    (
        "every record of the portion unlabelled",
        "zeroshot",
        ["--data", "gstore", "--task", "labels", "--folds", "2"],
        1,
        "none of the chosen records is labelled for task 'labels'",
    ),
    (
        "no labelled training record",
        "probe",
        [
            "--data",
            "gstore",
            "--task",
            "labels",
            "--train-folds",
            "2",
            "--val-folds",
            "3",
            "--test-folds",
            "1",
        ],
        1,
        "no train record is labelled for task 'labels'",
    ),
    (
        "--fractions 0",
        "probe",
        ["--data", "store", "--task", "super_class", "--fractions", "0"],
        2,
        r"argument --fractions: must be a fraction in \(0, 1\]",
    ),
    (
        "--fractions 1.5",
        "probe",
        ["--data", "store", "--task", "super_class", "--fractions", "1.5"],
        2,
        "argument --fractions",
    ),
    (
        "probe --n-boot -5",
        "probe",
        ["--data", "store", "--task", "super_class", "--n-boot", "-5"],
        2,
        "argument --n-boot: must be an integer >= 0",
    ),
    (
        "zeroshot --n-boot -5",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--n-boot", "-5"],
        2,
        "argument --n-boot",
    ),
    (
        "--val-fraction 1",
        "finetune",
        ["--data", "store", "--task", "super_class", "--val-fraction", "1"],
        2,
        "argument --val-fraction",
    ),
    (
        "--batch-size 0",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--batch-size", "0"],
        2,
        "argument --batch-size",
    ),
    (
        "--device foo",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--device", "foo"],
        2,
        "argument --device: 'foo' is not a device",
    ),
    (
        "--device cuda:99",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--device", "cuda:99"],
        2,
        "argument --device: 'cuda:99'",
    ),
    (
        "malformed prompts JSON",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--prompts", "bad.json"],
        1,
        "is not valid JSON",
    ),
    (
        "prompts lacking a class",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--prompts", "norm.json"],
        1,
        r"no zero-shot prompt for class\(es\)",
    ),
    (
        "a raw folder as --data",
        "zeroshot",
        ["--data", "ptbxl", "--task", "super_class"],
        1,
        "is not a complete melp store",
    ),
    (
        "model folder that does not exist",
        "zeroshot",
        ["--data", "store", "--task", "super_class", "--model", "nomodel"],
        1,
        "no such model folder",
    ),
    (
        "retrieve on an empty fold",
        "retrieve",
        ["--data", "store", "--folds", "42"],
        1,
        r"no records in folds \[42\]",
    ),
]


@pytest.mark.parametrize(
    ("name", "command", "argv", "code", "message"), EVAL_CASES, ids=[c[0] for c in EVAL_CASES]
)
def test_eval_command_mistake_is_one_line_and_writes_nothing(env, capsys, name, command, argv, code, message):
    (env / "bad.json").write_text("{'NORM': ")
    (env / "norm.json").write_text(json.dumps({"NORM": ["normal ecg"]}))
    out = env / f"out_{abs(hash(name))}"
    argv = [
        env / a if a in ("store", "store500", "gstore", "ptbxl", "bad.json", "norm.json", "nomodel") else a
        for a in argv
    ]
    model = _model(env)
    if "--model" in argv:
        model = []
    if "--device" in argv:
        model = model[:2]
    rc, stdout, err = run([command, *model, *argv, "--out", out], capsys)
    assert rc == code, (rc, err)
    import re

    assert re.search(message, one_error_line(err, command)), err
    assert not out.exists()  # no partial output


def test_embed_out_must_be_a_parquet_or_npy_file_checked_before_work(env, capsys):
    (env / "emb.npy").mkdir(exist_ok=True)
    for target in (env / "x.txt", env / "emb.npy"):
        rc, _, err = run(["embed", *_model(env), "--data", env / "store", "--out", target], capsys)
        assert rc == 2 and "argument --out" in one_error_line(err, "embed")
    (env / "afile").write_text("notes")
    rc, _, err = run(
        ["zeroshot", *_model(env), "--data", env / "store", "--task", "rhythm", "--out", env / "afile"],
        capsys,
    )
    assert rc == 2 and "is a file" in one_error_line(err, "zeroshot")
    assert (env / "afile").read_text() == "notes"


def test_damaged_store_stops_evaluation_naming_the_record(env, capsys, tmp_path):
    s = Path(shutil.copytree(env / "store", tmp_path / "s"))
    store = ECGStore(s)
    pos = int(store.select(folds=[9])[0])
    rid, row = store.manifest["id"].iat[pos], int(store.manifest["row"].iat[pos])
    sig = np.load(s / "signals.npy", mmap_mode="r+")
    sig[row, 0, :50] = sig[row, 0, :50] * np.float16(2)  # an edit of the same shape: only the checksum tells
    sig[row, 1, 3] = np.nan
    sig.flush()
    del sig
    out = tmp_path / "zs"
    rc, _, err = run(
        ["zeroshot", *_model(env), "--data", s, "--task", "super_class", "--folds", "9", "--out", out], capsys
    )
    assert rc == 1 and f"record {rid} " in one_error_line(err, "zeroshot") and not out.exists()
    rc, _, err = run(["embed", *_model(env), "--data", s, "--out", tmp_path / "e.npy"], capsys)
    assert rc == 1 and "does not match its checksum" in one_error_line(err, "embed")
    assert not (tmp_path / "e.npy").exists()
    rc, out_text, _ = run(["verify", s, "--no-progress"], capsys)
    assert rc == 1 and "DAMAGED: signals.npy" in out_text and f": {rid}" in out_text
    rc, out_text, _ = run(["verify", env / "store", "--no-progress"], capsys)
    assert rc == 0 and "intact" in out_text


PREPARE_CASES = [
    ("--chunk-size 0", ["--chunk-size", "0"], 2, "argument --chunk-size"),
    ("--chunk-size -1", ["--chunk-size", "-1"], 2, "argument --chunk-size"),
    ("--rate 0", ["--rate", "0"], 2, "argument --rate: must be a positive number"),
    ("--seconds 0", ["--seconds", "0"], 2, "argument --seconds"),
    ("--rate nan", ["--rate", "nan"], 2, "argument --rate"),
    ("--min-seconds -1", ["--min-seconds", "-1"], 2, "argument --min-seconds"),
    ("--workers -1", ["--workers", "-1"], 2, "argument --workers"),
    ("unknown -o key", ["-o", "sampel_rate=100"], 1, "unknown option.*sampel_rate.*valid options"),
    ("an -o key given twice", ["-o", "task=a", "-o", "task=b"], 1, "task given twice"),
    (
        "-o allow_flat_leads=ture",
        ["-o", "allow_flat_leads=ture"],
        1,
        "allow_flat_leads='ture': expected true or false",
    ),
    ("-o sample_rate=inf", ["-o", "sample_rate=inf"], 1, "expected a finite number"),
    ("-o task= (empty)", ["-o", "task="], 1, "the text after = is empty"),
    ("-o without =", ["-o", "sample_rate"], 2, "-o expects KEY=VALUE"),
]


@pytest.mark.parametrize(
    ("name", "argv", "code", "message"), PREPARE_CASES, ids=[c[0] for c in PREPARE_CASES]
)
def test_prepare_mistake_is_one_line_before_any_work(env, capsys, name, argv, code, message):
    import re

    out = env / f"p_{abs(hash(name))}"
    rc, _, err = run(
        ["prepare", "generic", "--root", env / "gen", "--out", out, "--no-progress", *argv], capsys
    )
    assert rc == code, err
    assert re.search(message, one_error_line(err, "prepare")), err
    assert not out.exists()


def test_prepare_rerun_on_a_damaged_store_leaves_it_and_names_the_way_out(env, capsys, tmp_path):
    s = Path(shutil.copytree(env / "gstore", tmp_path / "s"))
    data = (s / "signals.npy").read_bytes()
    (s / "signals.npy").write_bytes(data[:-100])
    before = {p.name: p.read_bytes() for p in s.iterdir() if p.is_file()}
    argv = ["prepare", "generic", "--root", env / "gen", "--out", s, "--no-progress"]
    rc, _, err = run(argv, capsys)
    assert rc == 1 and "is damaged" in one_error_line(err, "prepare") and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in s.iterdir() if p.is_file()} == before
    rc, _, _ = run([*argv, "--overwrite"], capsys)
    assert rc == 0
    assert (s / "signals.npy").read_bytes() == (env / "gstore" / "signals.npy").read_bytes()
    rc, _, err = run(["verify", tmp_path / "nothing"], capsys)
    assert rc == 1 and "not a complete melp store" in one_error_line(err, "verify")


# ----------------------------------------------------------------------------- the corpora through evaluation


def test_bad_input_corpus_through_embed_gives_the_kept_records_by_value(env, capsys, tmp_path):
    """`melp embed` on a store of the bad-input corpus (prepared at the model's rate): exactly the kept
    records come out, each embedding equal to the model's embedding of the builder's own value."""
    from fixtures_builders import build_bad_corpus_2
    from scipy.signal import resample_poly

    import melp
    from melp.data.datasets import prepare_ecg
    from melp.eval.embed import load_embeddings

    exp = build_bad_corpus_2(tmp_path / "raw")
    counts = prepare("generic", tmp_path / "raw", tmp_path / "s", rate=100, seconds=10, progress=False)
    kept = sorted(k for k, e in exp.items() if e["expect"] in ("keep", "repair"))
    assert counts["kept"] == len(kept)
    rc, out, err = run(["embed", *_model(env), "--data", tmp_path / "s", "--out", tmp_path / "e.npy"], capsys)
    assert rc == 0, err
    emb = load_embeddings(tmp_path / "e.npy")
    assert sorted(emb["id"]) == kept
    model = melp.load_model(env / "model").eval()
    picks = [
        "f212",
        "f8",
        "spf2",
        "micro_latin1",
        "mixed",
        "v73",
        "v4_T",
        "npy_gain",
        "side_uv",
        "lead_alias",
    ]
    xs, lengths = [], []
    for rid in picks:  # 500 Hz values -> the 100 Hz, 10 s model input, computed here
        value = resample_poly(np.asarray(exp[rid]["value"], dtype=np.float64), 1, 5, axis=-1, padtype="line")
        n = value.shape[1]
        padded = np.zeros((12, 1000))
        padded[:, :n] = value.astype(np.float16)
        xs.append(prepare_ecg(padded, n, normalize="minmax"))
        lengths.append(n)
    with torch.no_grad():
        want = model.embed(torch.stack(xs), lengths=torch.tensor(lengths))["rhythm"].numpy()
    got = np.stack([emb["rhythm"][emb["id"].index(rid)] for rid in picks])
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)


def test_label_corpus_through_zeroshot_scores_only_labelled_kept_records(env, capsys, tmp_path):
    from fixtures_builders import build_label_corpus

    exp = build_label_corpus(tmp_path / "raw")
    prepare(
        "generic", tmp_path / "raw", tmp_path / "s", rate=100, seconds=10, progress=False, csv="cells.csv"
    )
    out = tmp_path / "zs"
    argv = [
        "zeroshot",
        *_model(env),
        "--data",
        tmp_path / "s",
        "--task",
        "labels",
        "--split",
        "train",
        "--n-boot",
        "0",
        "--out",
        out,
    ]
    rc, stdout, err = run(argv, capsys)
    assert rc == 0, err
    scores = pd.read_csv(out / "zeroshot_labels_scores.csv", dtype={"id": str})
    labelled = sorted(
        k
        for k, e in exp.items()
        if not k.startswith("ll_")
        and e["expect"] in ("keep", "repair")
        and e.get("labels") is not None
        and e.get("split", "train") == "train"
    )
    assert sorted(scores["id"]) == labelled  # rejects absent, unlabelled rows left out, [] rows kept
    assert f"n={len(labelled)}" in stdout


def test_predict_and_benchmark_usage_mistakes_are_one_line(env, capsys):
    (env / "afile2").write_text("notes")
    cases = [
        (["predict", "--model", env / "model", "--record", "x.npy", "--device", "foo"], "argument --device"),
        (
            ["predict", "--model", env / "model", "--record", "x.npy", "--out", env / "p.txt"],
            "use a .csv suffix",
        ),
        (
            ["benchmark", "--model", env / "model", "--ptbxl", env / "store", "--out", env / "afile2"],
            "is a file",
        ),
    ]
    for argv, message in cases:
        rc, _, err = run(argv, capsys)
        assert rc == 2 and message in one_error_line(err, argv[0]), err
    assert (env / "afile2").read_text() == "notes"
