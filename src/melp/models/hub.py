"""Publishing a model on the Hugging Face Hub: the folder to upload, its model card, the upload.

:func:`prepare_upload` writes everything that would be uploaded into a local folder (the model
files, plus ``README.md``: architecture, training data and steps, metrics, the input contract);
:func:`push_to_hub` prepares that folder in a temporary directory and uploads it with one
``huggingface_hub`` commit. Tests check the prepared folder offline.

Where the card's facts come from: the model's config; for a folder written by ``melp pretrain``
(``RUN/best_model``), the run's ``config.yaml`` and ``summary.json``; ``conversion.json`` of a
converted checkpoint; ``classifier.json`` of a saved classifier; and any result JSON files passed
as ``results`` (written by ``melp zeroshot`` / ``probe`` / ``finetune`` / ``retrieve`` ...).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["model_card", "prepare_upload", "push_to_hub"]

_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "text_config.json",
    "tokenizer",
    "conversion.json",
    "classifier.json",
    "head.safetensors",
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from None


def _run_info(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    import yaml

    info: dict[str, Any] = {"dir": str(run_dir)}
    if (run_dir / "config.yaml").is_file():
        info["config"] = yaml.safe_load((run_dir / "config.yaml").read_text())
    if (run_dir / "summary.json").is_file():
        info["summary"] = _read_json(run_dir / "summary.json")
    if len(info) == 1:
        raise FileNotFoundError(
            f"{run_dir}: neither config.yaml nor summary.json (not a `melp pretrain` output)"
        )
    return info


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def _contract_section(e: dict) -> list[str]:
    return [
        "## Input contract",
        "",
        f"- shape `(B, {e['in_leads']}, {e['n_samples']})`: {e['n_samples']} samples = "
        f"{e['n_samples'] / e['sample_rate']:g} s at {e['sample_rate']:g} Hz",
        f"- leads, in this order: {', '.join(e['leads'])}",
        f"- normalisation: `{e['normalize']}` per record, over the valid (unpadded) samples",
        "- `model.preprocess(signal, fs, lead_names)` turns a raw record (any lead order and rate, mV) "
        "into this input",
        "",
    ]


def _architecture_section(config: dict, n_params: int) -> list[str]:
    e, t, h = config["ecg"], config["text"], config["heads"]
    lines = ["## Architecture", ""]
    if e["type"] == "wav2vec2":
        stem = " -> ".join(f"conv({c}, k{k}, s{s})" for c, k, s in e["conv_layers"])
        lines.append(
            f"- ECG encoder: wav2vec 2.0-style, stem {stem}; {e['layers']} post-LN transformer layers, width "
            f"{e['width']}, {e['heads']} heads, FFN {e['ffn']}; positional conv kernel {e['pos_conv_kernel']}, "
            f"{e['pos_conv_groups']} groups"
        )
    else:
        lines.append(f"- ECG encoder: {e['type']} (channels {e.get('channels')}, blocks {e.get('blocks')})")
    lines.append(
        f"- beat pooler: {h['n_beat_queries']} queries, {h['beat_heads']} heads, shared space D = "
        f"{config['embed_dim']}; caption pooler: {h['n_caption_queries']} queries, {h['caption_heads']} heads"
    )
    if t is not None:
        lines.append(
            f"- text tower: `{t['name_or_path']}` ({'causal' if t['causal'] else 'bidirectional'}, max length "
            f"{t['max_length']}); caption decoder: {config['decoder']['layers']} layers"
        )
    return lines + [f"- parameters: {n_params:,}", ""]


def _training_section(run: dict | None, conversion: dict | None, classifier: dict | None) -> list[str]:
    lines = ["## Training", ""]
    if run and "config" in run:
        rc = run["config"]
        data, tr, opt, loss = (rc.get(k, {}) for k in ("data", "trainer", "optim", "loss"))
        lines.append(
            f"- data: store `{data.get('store')}` (split {data.get('split')}, folds {data.get('folds')}, "
            f"limit {data.get('limit') or 'none'}), normalisation {data.get('normalize')}, lead masking p = "
            f"{data.get('lead_mask_p')}, batch {data.get('batch_size')} per device"
        )
        lines.append(
            f"- steps: max_steps {tr.get('max_steps')}, max_epochs {tr.get('max_epochs')}, devices "
            f"{tr.get('devices')}, precision {tr.get('precision')}; AdamW lr {opt.get('lr')}, weight decay "
            f"{opt.get('weight_decay')}; loss weights clip/caption/beat {loss.get('clip')}/{loss.get('caption')}/"
            f"{loss.get('beat')}; model {rc.get('model', {}).get('name')}, seed {rc.get('seed')}"
        )
    if run and "summary" in run:
        s = run["summary"]
        lines.append(
            f"- run: {s.get('global_step')} of {s.get('total_steps')} steps in {_fmt(s.get('seconds'))} s; "
            f"best val/mean_auroc {_fmt(s.get('best_score'))}"
        )
    if conversion:
        lines.append(
            f"- converted with `melp convert {conversion['family']}` from `{Path(conversion['source']).name}` "
            f"(sha256 `{conversion['source_sha256'][:16]}...`): {len(conversion['mapped'])} tensors mapped, "
            f"{len(conversion['dropped'])} pretraining-only tensors dropped, initialised here: "
            f"{', '.join(conversion['initialised']) or 'none'}"
        )
    if classifier:
        lines.append(
            f"- classifier: {classifier.get('method')} on task `{classifier.get('task')}` "
            f"({len(classifier['classes'])} classes: {', '.join(classifier['classes'])}), "
            f"{classifier.get('splits')}; thresholds: {classifier.get('threshold_rule')}"
        )
    if not (run or conversion or classifier):
        lines.append("- no training record was given (pass the pretraining run folder to describe it)")
    return lines + [""]


def _metrics_section(run: dict | None, results: list[tuple[str, dict]], classifier: dict | None) -> list[str]:
    rows = []
    if run and run.get("summary", {}).get("best_score") is not None:
        best = _fmt(run["summary"]["best_score"])
        rows.append(("pretraining validation", "val/mean_auroc (zero-shot, best checkpoint)", best))
    if classifier and classifier.get("test_macro_auroc") is not None:
        name = f"{classifier.get('method')} {classifier.get('task')}"
        rows.append((name, "test macro AUROC", _fmt(classifier["test_macro_auroc"])))
    for name, res in results:
        for key in ("macro_auroc", "macro_f1", "R@1", "R@10", "bleu4", "rougeL"):
            if key in res:
                rows.append((f"{res.get('method', name)} {res.get('task', '')}".strip(), key, _fmt(res[key])))
        for key in ("ecg_to_report", "report_to_ecg"):
            if isinstance(res.get(key), dict):
                r = res[key]
                rows.append(
                    (f"retrieval {key}", "R@1 / R@10", f"{_fmt(r.get('R@1'))} / {_fmt(r.get('R@10'))}")
                )
    lines = ["## Metrics", ""]
    if not rows:
        return lines + ["No evaluation results were given.", ""]
    return (
        lines
        + ["| evaluation | metric | value |", "|---|---|---|"]
        + [f"| {a} | {b} | {c} |" for a, b, c in rows]
        + [""]
    )


def model_card(
    config: dict,
    n_params: int,
    meta: dict | None = None,
    run: dict | None = None,
    results: list[tuple[str, dict]] | None = None,
    conversion: dict | None = None,
    classifier: dict | None = None,
    repo_id: str | None = None,
) -> str:
    """The ``README.md`` of a model repository (Markdown with a YAML header).

    Args:
        config: the resolved model config; n_params: its parameter count.
        meta: ``melp_version`` / ``config_hash``; run: ``{"config", "summary"}`` of a pretraining run;
        results: (file name, result JSON) pairs; conversion / classifier: those JSON files' content.
        repo_id: the repository the card is for (usage snippet).
    """
    meta = meta or {}
    header = ["---", "library_name: melp", "tags:", "- ecg", "- electrocardiogram", "- melp"]
    header += ["pipeline_tag: feature-extraction", "---", "", f"# {config['name']}", ""]
    kind = "A MELP model" if config["text"] is not None else "An encoder-only MELP model (no text tower)"
    digest = str(meta.get("config_hash") or "?")[:16]
    header += [f"{kind}, saved by melp {meta.get('melp_version', '?')} (config hash `{digest}`).", ""]
    usage = ["## Use", "", "```python", "import melp", f"model = melp.load_model({(repo_id or 'PATH')!r})"]
    usage += ["ecg, valid = model.preprocess(signal, fs, lead_names)   # one raw record -> model input"]
    usage += ["emb = model.embed(ecg[None])                           # rhythm, beats, probe embeddings"]
    if config["text"] is not None:
        usage += ["z_e, z_t = model.encode_ecg(ecg[None]), model.encode_text('sinus rhythm.')"]
    sections = [
        header,
        _contract_section(config["ecg"]),
        _architecture_section(config, n_params),
        _training_section(run, conversion, classifier),
        _metrics_section(run, results or [], classifier),
        usage + ["```", ""],
    ]
    return "\n".join(line for section in sections for line in section)


def prepare_upload(
    model_or_dir: Any,
    folder: str | Path,
    run_dir: str | Path | None = None,
    results: list[str | Path] | tuple = (),
    repo_id: str | None = None,
) -> Path:
    """Write into ``folder`` exactly what :func:`push_to_hub` uploads; returns ``folder``.

    Args:
        model_or_dir: a :class:`MELPModel` or a saved model folder (its files are copied as they are).
        run_dir: the ``melp pretrain`` output folder (default: the parent of a ``best_model`` folder
            when it holds ``summary.json``).
        results: result JSON files of evaluation commands, summarised in the card's metrics table.
    """
    import melp

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model_or_dir, (str, Path)):
        src = Path(model_or_dir)
        model = melp.load_model(src)
        for name in _MODEL_FILES:
            p = src / name
            if p.is_dir():
                shutil.copytree(p, out / name, dirs_exist_ok=True)
            elif p.is_file():
                shutil.copy2(p, out / name)
        if run_dir is None and (src.parent / "summary.json").is_file():
            run_dir = src.parent
    else:
        model = model_or_dir
        model.save_pretrained(out)
    config_json = _read_json(out / "config.json")
    meta = {k: config_json.get(k) for k in ("melp_version", "config_hash")}
    extra = {
        n: _read_json(out / f"{n}.json")
        for n in ("conversion", "classifier")
        if (out / f"{n}.json").is_file()
    }
    card = model_card(
        model.config,
        sum(p.numel() for p in model.parameters()),
        meta=meta,
        run=_run_info(Path(run_dir) if run_dir is not None else None),
        results=[(Path(r).name, _read_json(Path(r))) for r in results],
        conversion=extra.get("conversion"),
        classifier=extra.get("classifier"),
        repo_id=repo_id,
    )
    (out / "README.md").write_text(card)
    return out


def push_to_hub(
    model_or_dir: Any,
    repo_id: str,
    *,
    run_dir: str | Path | None = None,
    results: list[str | Path] | tuple = (),
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload melp model",
) -> str:
    """Prepare the upload folder (:func:`prepare_upload`) and upload it to ``repo_id`` (created if
    needed); returns the commit URL. The only function in melp that writes to the Hub."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="melp-upload-") as tmp:
        folder = prepare_upload(model_or_dir, tmp, run_dir=run_dir, results=results, repo_id=repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), revision=revision, commit_message=commit_message
        )
    return str(getattr(info, "commit_url", info))
