"""What OpenVINO GenAI's speculative decoding needs beside the two IR folders: a tokenizer, and the draft
as a pipeline property.

GenAI runs speculative decoding when a pipeline's properties hold `draft_model` (`genai.draft_model(folder,
device, ...)`) and each request's `GenerationConfig.num_assistant_tokens` is k: the draft proposes k tokens,
the target checks them in one pass, and under greedy decoding the output is the target's own. Its
speculative pipelines (continuous batching and `LLMPipeline` alike) check at construction that the target's
and the draft's tokenizers agree by encoding a test sentence with each; without an `openvino_tokenizer.xml`
beside each model that check fails ("Tokenizer::encode is not available"), even though optlab feeds token
ids and reads token ids and never asks for text.

So `tokenized(folder)` is the folder itself when it has a tokenizer, else a copy made of links to its files
plus a *stand-in* tokenizer: one word per token id ("t0", "t1", ...; the model's bos and eos ids named as
such), converted by openvino-tokenizers. Target and draft of one vocabulary get the same stand-in, so the
check passes, and the ids go in and come out untouched. The folder `export` wrote is left as it was; the
linked copies live in a temporary folder for the process.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "openvino_tokenizer.xml"
_COPIES: tempfile.TemporaryDirectory | None = None


def _config(folder: Path) -> dict[str, Any]:
    """The model's config.json (vocabulary size, bos and eos ids)."""
    path = folder / "config.json"
    if not path.exists():
        raise ValueError(f"{folder} has no config.json: pass an IR folder written by openvino_engine.export")
    return json.loads(path.read_text(encoding="utf-8"))


def stand_in_tokenizer(vocab_size: int, bos_token_id: int | None = None, eos_token_id: int | None = None):
    """OpenVINO tokenizer and detokenizer models of a word-level vocabulary "t0".."t{vocab_size-1}": id i is
    word "t{i}", unknown text is id 0 (only GenAI's construction-time check ever encodes text)."""
    from openvino_tokenizers import convert_tokenizer  # lazy: heavy, and only speculative decoding needs it
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 3:
        raise ValueError(f"a stand-in tokenizer needs a vocabulary of at least 3 ids, got {vocab_size}")
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {name: f"t{token}" for name, token in (("bos_token", bos_token_id), ("eos_token", eos_token_id))
               if token is not None and 0 <= token < vocab_size}
    fast = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", pad_token="t0", **special)
    return convert_tokenizer(fast, with_detokenizer=True)


def tokenized(folder: str | Path) -> Path:
    """`folder` if it has an OpenVINO tokenizer, else a linked copy with the stand-in tokenizer (see the module)."""
    import openvino as ov  # lazy: heavy

    global _COPIES
    folder = Path(folder).resolve()
    if (folder / TOKENIZER_FILE).exists():
        return folder
    config = _config(folder)
    _COPIES = _COPIES or tempfile.TemporaryDirectory(prefix="optlab-openvino-tokenized-")
    copy = Path(_COPIES.name) / hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    if (copy / TOKENIZER_FILE).exists():
        return copy
    copy.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if not (copy / item.name).exists():
            (copy / item.name).symlink_to(item)
    tokenizer, detokenizer = stand_in_tokenizer(int(config["vocab_size"]), config.get("bos_token_id"),
                                                config.get("eos_token_id"))
    ov.save_model(detokenizer, copy / "openvino_detokenizer.xml")
    ov.save_model(tokenizer, copy / TOKENIZER_FILE)  # last: its presence marks the copy complete
    return copy


def draft_property(draft_folder: str | Path, device_properties: dict[str, Any]) -> Any:
    """The `draft_model` pipeline property for the draft IR in `draft_folder` (tokenized, on the CPU, with the
    target's device properties: threads and precision)."""
    import openvino_genai as genai  # lazy: heavy

    return genai.draft_model(str(tokenized(draft_folder)), "CPU", **device_properties)


def check_draft(draft: Any, draft_folder: str | Path | None, k: int) -> int | None:
    """The draft's tokens per round (`k`, GenAI's num_assistant_tokens) when a draft is given, None without
    one; refused before any work when k is not a positive integer or the draft comes in both forms."""
    if draft is not None and draft_folder is not None:
        raise ValueError("pass the draft as a causal LM (draft=) or as an IR folder (draft_folder=), not both")
    if draft is None and draft_folder is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (num_assistant_tokens) must be a positive integer, got {k!r}; e.g. k=4")
    return k
