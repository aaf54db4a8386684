"""Results recorded on machines a workshop does not have, shipped with optlab as results folders.

`recorded("h200", "bids")` is the folder of a study run on an NVIDIA H200 (GPU candidates of the
zoo's bids model against its eager fp32 baseline on that machine's CPU; command and machine in
docs/benchmarks/gpu.md). A notebook loads it beside the attendee's own rows with
`study.load_reference(recorded("h200", dataset), label="recorded on an H200")`: the rows are
drawn as labelled reference points and never recommended or used as cache hits.

`recorded("h100", "llm")` holds notebook 08's target language model served on an NVIDIA H100 with
transformers (`python -m optlab.bench gpu-llm`): rows shaped like 08's generation candidates, read
with `study.store.reference_rows(recorded("h100", "llm"), label="recorded on an H100")`.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).with_name("reference")
MACHINES = {"h200": "NVIDIA H200, torch 2.11 + CUDA 13.0, zoo models trained on the full data",
            "h100": "NVIDIA H100 80GB HBM3, torch 2.11 + CUDA 13.0, transformers 4.57.6, the zoo's trained target LM"}


def available() -> dict[str, list[str]]:
    """Machine -> datasets with recorded results."""
    return {machine: sorted(p.name for p in (ROOT / machine).iterdir() if (p / "optlab-store.json").is_file())
            for machine in MACHINES if (ROOT / machine).is_dir()}


def recorded(machine: str, dataset: str) -> Path:
    """The results folder recorded on `machine` for `dataset` (read it with Study.load_reference)."""
    have = available()
    if machine not in have:
        raise ValueError(f"no results recorded on {machine!r}; recorded machines: {', '.join(have) or 'none'}")
    if dataset not in have[machine]:
        raise ValueError(f"no {dataset!r} results recorded on {machine!r}; recorded there: {', '.join(have[machine])}")
    return ROOT / machine / dataset
