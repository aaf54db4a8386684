"""Benchmark commands that print figures: `python -m optlab.bench <name> [--smoke]`.

Speed and accuracy targets live here, not in timed unit tests.
"""
from __future__ import annotations

import importlib
import sys

BENCHES = {
    "zoo": "optlab.bench.zoo",
    "measure": "optlab.bench.measure",
    "techniques": "optlab.bench.techniques",
    "pruning": "optlab.bench.pruning",
    "serving": "optlab.bench.serving",
    "rtb": "optlab.bench.rtb",
    "gpu": "optlab.bench.gpu",
    "gpu-llm": "optlab.bench.gpu_llm",
    "transformers": "optlab.bench.transformers",
    "llm": "optlab.bench.llm",
    "notebooks": "optlab.bench.notebook_runner",
    "cascade": "optlab.bench.cascade",
    "ray": "optlab.bench.ray_study",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m optlab.bench {{{'|'.join(BENCHES)}}} [--smoke]")
        return 2
    module = importlib.import_module(BENCHES[argv[0]])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
