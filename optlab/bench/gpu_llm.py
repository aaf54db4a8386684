"""`python -m optlab.bench gpu-llm --bundle DIR --out DIR`: notebook 08's target language model on a
GPU with `transformers`, on 08's trace, as reference rows 08 shows beside its CPU rows.

Two steps, because the model, the trace and the held-out windows belong to the machine that trained
the model (the corpus is the installed Python's help text, which differs on another Python):

1. where the zoo trained the target (CPU): `python -m optlab.bench gpu-llm --export DIR` writes a
   bundle: the target's weights and shape, 08's trace (the notebook's default TraceSpec and test-topic
   prompts) as token ids, the 64 perplexity windows 08 scores (128 tokens of the test topics), and
   the CPU baseline's greedy tokens on the trace's first 4 requests and its perplexity.
2. on a CUDA machine: `--bundle DIR --out DIR` measures each candidate (`CANDIDATES`: eager fp32 (TF32
   off, torch's default), eager bf16, bf16 with a static KV cache and a torch.compile'd decode step
   with CUDA graphs (`reduce-overhead`) and without; transformers' own continuous batching in bf16
   only when asked for: it stalled on an H100) the way 08 measures a candidate: goodput at 08's
   SLA (the serving layer's rate search on the trace), TTFT/TPOT p50/p99 at that rate, perplexity on
   the same windows, greedy agreement with the CPU baseline; plus peak GPU memory and one decode
   step's p50 after a warm-up that runs until the latency settles. It writes the rows as a results
   folder (`DIR/llm`, optlab-store: `reference.recorded(machine, "llm")` once committed), the JSON
   report and the machine, and prints the table.

The search's probes run in-thread (`driver="thread"`, 08's runs use the load generator's process):
torch.compile's CUDA graphs run only in the thread that recorded them. Without CUDA it says so in one
line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optlab.bench.render import Col, Layout, Renderer
from optlab.data.hashing import sha256_file, sha256_json
from optlab.generation.server import GoodputSearch
from optlab.generation.trace import TraceRequest
from optlab.instruments.generation import Sla

COMMAND = "python -m optlab.bench gpu-llm"
# notebook 08's default run (its parameters cell and section 3): the trace, the SLA, the agreement requests
NOTEBOOK_TRACE = {"rate_per_s": 3.0, "requests": 24, "prompt_tokens": (16, 64), "output_tokens": (16, 64), "seed": 0}
SLA = Sla(ttft_ms=500.0, tpot_ms=50.0)
AGREEMENT_REQUESTS = 4
PERPLEXITY_WINDOWS = 64
BUNDLE_FILE, WEIGHTS_FILE = "bundle.json", "target.pt"


@dataclass(frozen=True)
class GpuCandidate:
    """One way to serve the target on the GPU: `engine` "sequential" (one request at a time, optlab's
    baseline schedule) or "transformers" (transformers' continuous batching); `cache` dynamic, static
    or paged; `compile` a torch.compile mode for the static cache's decode step."""

    key: str
    name: str
    precision: str
    engine: str = "sequential"
    cache: str = "dynamic"
    compile: str | None = None


CANDIDATES = (
    GpuCandidate("eager-fp32", "GPU eager fp32", "fp32"),
    GpuCandidate("eager-bf16", "GPU eager bf16", "bf16"),
    GpuCandidate("static-compile-bf16", "GPU bf16, static KV cache + torch.compile", "bf16", cache="static",
                 compile="reduce-overhead"),
    GpuCandidate("batched-bf16", "GPU bf16, transformers continuous batching", "bf16", engine="transformers",
                 cache="paged"),
    GpuCandidate("static-compile-nographs-bf16", "GPU bf16, static KV cache + torch.compile, no CUDA graphs", "bf16",
                 cache="static", compile="default"),
)


DEFAULT = tuple(c.key for c in CANDIDATES if c.engine == "sequential")


def search(max_probes: int) -> GoodputSearch:
    """08's goodput search (its SLA, start rate, tolerance, no re-probes), in-thread, more probes: the
    GPU's rates go further than the CPU's."""
    return GoodputSearch(sla=SLA, min_requests=NOTEBOOK_TRACE["requests"], start_per_s=4.0, rel_tol=0.2,
                         max_probes=max_probes, confirm_failures=0, min_per_s=0.1, driver="thread")


# --- the bundle (made where the model was trained) ----------------------------------------------------------

def export_bundle(folder: Path, progress: Callable[[str], None] = print) -> Path:
    """Write 08's target, trace, perplexity windows and CPU baseline figures to `folder` (see the docstring)."""
    import torch

    from optlab.data.text_corpus import load as load_corpus
    from optlab.generation import candidates as gc
    from optlab.generation.demo import models
    from optlab.generation.trace import TraceSpec, poisson_trace
    from optlab.models import language

    pair = models(smoke=False)
    if pair.tokenizer is None:
        raise SystemExit(f"{COMMAND} --export: the zoo has no trained language models here ({pair.origin})")
    spec = TraceSpec(vocab_size=pair.target.config.vocab_size, **NOTEBOOK_TRACE)
    trace = poisson_trace(spec, pair.prompts())
    windows = language.windows(language.encode_split(pair.tokenizer, None, "test"), gc.PERPLEXITY_WINDOW_TOKENS,
                               limit=PERPLEXITY_WINDOWS)
    progress(f"trace: {len(trace)} requests; windows: {len(windows)}; scoring the CPU baseline")
    perplexity = language.perplexity(pair.target, windows)
    reference = gc.greedy_tokens(gc.BASELINE.make(pair), trace[:AGREEMENT_REQUESTS])
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(pair.target.state_dict(), folder / WEIGHTS_FILE)
    bundle = {"spec": pair.target.optlab_spec, "vocab_size": int(pair.target.config.vocab_size),
              "weights_sha256": sha256_file(folder / WEIGHTS_FILE), "origin": pair.origin,
              "trace_spec": {**asdict(spec)}, "trace": [{**asdict(r), "prompt_ids": list(r.prompt_ids)} for r in trace],
              "windows": [w.tolist() for w in windows], "window_tokens": gc.PERPLEXITY_WINDOW_TOKENS,
              "cpu_perplexity": perplexity, "cpu_reference_tokens": reference,
              "made_on": {"python": platform.python_version(), "corpus_fingerprint": load_corpus().fingerprint,
                          "torch": torch.__version__, "transformers": _version("transformers")}}
    (folder / BUNDLE_FILE).write_text(json.dumps(bundle))
    progress(f"bundle written to {folder} (CPU perplexity {perplexity:.3f} on {len(windows)} windows)")
    return folder


@dataclass(frozen=True)
class Bundle:
    folder: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> Bundle:
        path = Path(folder) / BUNDLE_FILE
        if not path.is_file():
            raise SystemExit(f"{COMMAND}: no {BUNDLE_FILE} in {folder}; make one with {COMMAND} --export DIR")
        data = json.loads(path.read_text())
        if sha256_file(Path(folder) / WEIGHTS_FILE) != data["weights_sha256"]:
            raise SystemExit(f"{COMMAND}: {folder}/{WEIGHTS_FILE} does not match its bundle; export it again")
        return cls(Path(folder), data)

    @property
    def trace(self) -> list[TraceRequest]:
        return [TraceRequest(r["request_id"], float(r["arrival_s"]), tuple(r["prompt_ids"]), int(r["max_new_tokens"]))
                for r in self.data["trace"]]

    @property
    def windows(self) -> list[np.ndarray]:
        return [np.asarray(w, dtype=np.int64) for w in self.data["windows"]]

    @property
    def digest(self) -> str:
        return sha256_json({k: v for k, v in self.data.items() if k != "made_on"})

    def model(self, device: str, precision: str):
        """The target rebuilt from its shape and weights, on `device` in `precision`."""
        import torch

        from optlab.models import language

        model = language.build(language.LMSpec(**self.data["spec"]), self.data["vocab_size"])
        model.load_state_dict(torch.load(self.folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        return model.to(device=device, dtype=dtype).eval()


def _version(name: str) -> str | None:
    from optlab.instruments.environment import package_version

    return package_version(name)


# --- one candidate ----------------------------------------------------------------------------------------

def engine_factory(candidate: GpuCandidate, model, device: str, max_len: int) -> tuple[Callable[[], Any], Any]:
    """A fresh engine per call (a goodput probe's), and the static decoder they share (None without one)."""
    from optlab.bench.gpu_llm_engines import DeviceEngine, StaticDecoder

    if candidate.engine == "transformers":
        from optlab.generation.reference import TransformersEngine

        return (lambda: TransformersEngine(model)), None
    decoder = None
    if candidate.cache == "static":
        decoder = StaticDecoder(model, device, max_len, mode=candidate.compile)
    return (lambda: DeviceEngine(model, device, decoder)), decoder


def _closing(engine):
    getattr(engine, "close", lambda: None)()


def serve_rounds(factory: Callable[[], Any], trace, settings: Settings, started: float,
                 progress: Callable[[str], None], name: str) -> list[Any]:
    """The goodput search once per round (seed = round), while the bench's time budget lasts (one at least)."""
    from optlab.generation.server import GenerationServer, goodput_at_sla

    found = []
    for round_ in range(settings.rounds):
        if round_ and time.perf_counter() - started > settings.budget_s:
            progress(f"  {name}: time budget ({settings.budget_s:.0f} s) spent, {round_} round(s)")
            break
        engines: list[Any] = []

        def make_server(engines=engines):
            engines.append(factory())
            return GenerationServer(engines[-1], saturation_s=5.0)
        round_start = time.perf_counter()

        def on_probe(row, round_start=round_start):
            progress(_probe_line(row, time.perf_counter() - round_start))
        try:
            result = goodput_at_sla(make_server, trace, search(settings.max_probes), seed=round_, on_probe=on_probe)
        finally:
            for engine in engines:
                _closing(engine)
        found.append(result)
        progress(f"  {name} round {round_}: goodput {result.goodput_per_s:.4g}/s ({len(result.curve)} probes)")
    return found


def _probe_line(row: dict[str, Any], seconds: float) -> str:
    def ms(value):
        return "-" if value is None or not np.isfinite(value) else f"{value:.2f} ms"
    return (f"    probe {row['offered_per_s']:.4g}/s: {'passed' if row['passed'] else 'failed'}, TTFT p99 "
            f"{ms(row.get('ttft_p99_ms'))}, TPOT p99 {ms(row.get('tpot_p99_ms'))} ({seconds:.1f} s into the round)")


def median_round(found: list[Any]) -> tuple[Any, dict[str, Any]]:
    """The round with the median goodput (the lower middle for an even count) and the spread."""
    from optlab.generation.candidates import _figures

    order = sorted(range(len(found)), key=lambda i: found[i].goodput_per_s)
    middle = found[order[(len(order) - 1) // 2]]
    goodputs = [f.goodput_per_s for f in found]
    return middle, {**_figures(middle), "rounds": len(found), "goodput_low": min(goodputs),
                    "goodput_high": max(goodputs), "goodput_rounds": goodputs}


def measure_candidate(candidate: GpuCandidate, bundle: Bundle, settings: Settings, started: float,
                      progress: Callable[[str], None]) -> dict[str, Any]:
    """Every figure of one candidate's row (see the module's docstring)."""
    import torch

    from optlab.bench.gpu_llm_engines import cudagraph_skips, decode_step, device_perplexity, weights_mb
    from optlab.generation.candidates import greedy_tokens, token_agreement

    device, trace = settings.device, bundle.trace
    cuda = device.startswith("cuda")
    before = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = bundle.model(device, candidate.precision)
    max_len = max(len(r.prompt_ids) + r.max_new_tokens for r in trace)
    factory, decoder = engine_factory(candidate, model, device, max_len)
    figures: dict[str, Any] = {"size_mb": weights_mb(model)}
    if candidate.engine == "sequential":
        figures.update(decode_step(model, device, decoder))
        progress(f"  {candidate.name}: decode step p50 {figures['decode_step_p50_ms']:.3f} ms after "
                 f"{figures['warmup_calls']} warm-up calls")
    if decoder is not None:
        figures["compile_first_call_s"] = decoder.compile_s
        figures["cudagraph_skips"] = cudagraph_skips() if candidate.compile == "reduce-overhead" else None
    engine = factory()
    try:
        tokens = greedy_tokens(engine, trace[:AGREEMENT_REQUESTS])
    finally:
        _closing(engine)
    figures["agreement"] = token_agreement(bundle.data["cpu_reference_tokens"], tokens)
    figures["perplexity"] = device_perplexity(model, bundle.windows, device)
    progress(f"  {candidate.name}: agreement {figures['agreement']:.3f}, perplexity {figures['perplexity']:.3f}")
    middle, spread = median_round(serve_rounds(factory, trace, settings, started, progress, candidate.name))
    figures.update(spread)
    figures["sla_curve"] = middle.curve[[c for c in ("offered_per_s", "passed", "ttft_p99_ms", "tpot_p99_ms")
                                         if c in middle.curve]].to_dict(orient="records")
    if cuda:
        figures["peak_gpu_memory_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    del model, factory, decoder
    if cuda:
        torch.cuda.empty_cache()
    return figures


# --- rows -------------------------------------------------------------------------------------------------

def machine_key(gpu_name: str | None) -> str:
    """"h100" / "h200" from the device's name (the reference folder's machine), else a slug of it."""
    name = (gpu_name or "cpu").lower()
    for known in ("h100", "h200", "a100", "l40s"):
        if known in name:
            return known
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "unknown"


def base_row(candidate: GpuCandidate, bundle: Bundle, env: dict[str, Any], settings: Settings) -> dict[str, Any]:
    cpu_ppl = bundle.data["cpu_perplexity"]
    machine = env.get("gpu_name") or f"CPU {env.get('cpu_model')} (dry run)"
    return {**env, "candidate": candidate.name, "recipe": candidate.name,
            "recipe_json": json.dumps({"kind": "gpu-generation", **asdict(candidate)}, sort_keys=True),
            "family": "gpu", "runtime": "torch", "engine": candidate.engine, "model": "target",
            "weights": candidate.precision, "precision": candidate.precision, "kv_cache": candidate.cache,
            "compile_mode": candidate.compile, "status": "ok", "error": None, "metric": "perplexity",
            "baseline_quality": cpu_ppl, "quality_note": f"perplexity on {len(bundle.windows)} windows of "
            f"{bundle.data['window_tokens']} tokens of the test topics, on the GPU; baseline_quality is the fp32 "
            "target's on the CPU (notebook 08's baseline)",
            "perplexity_forward": "eager, same weights" if candidate.compile or candidate.engine != "sequential"
            else "eager",
            "agreement_note": "greedy token agreement with the CPU fp32 baseline on the trace's first "
            f"{AGREEMENT_REQUESTS} requests", "machine": machine, "machine_key": machine_key(env.get("gpu_name")),
            "machine_label": f"recorded on {machine}", "driver": "thread", "transformers_version":
            _version("transformers"), "cuda_version": _cuda_version(), "trace": json.dumps(bundle.data["trace_spec"]),
            "bundle": bundle.digest[:16], "model_origin": bundle.data["origin"], "command": settings.command,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _cuda_version() -> str | None:
    import torch

    return torch.version.cuda


def finish_row(row: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    row = {**row, **figures}
    ppl = row.get("perplexity")
    row["quality"] = ppl
    row["quality_drop"] = None if ppl is None else ppl - row["baseline_quality"]
    return row


@dataclass(frozen=True)
class Settings:
    device: str = "cuda"
    rounds: int = 3
    max_probes: int = 10
    budget_s: float = 300.0  # no further rounds after this many seconds of the run
    last_start_s: float = 150.0  # and no further candidate once budget_s + last_start_s have passed
    command: str = COMMAND


def run(bundle: Bundle, candidates: list[GpuCandidate], settings: Settings, out: Renderer,
        on_row: Callable[[dict[str, Any]], None] = lambda _row: None) -> list[dict[str, Any]]:
    """Every candidate's row, in order; `on_row` sees each as it finishes (the results folder is
    written row by row, so a run cut short keeps what it measured)."""
    from optlab.instruments.environment import environment

    started = time.perf_counter()
    idle = environment(settings.device).to_dict()
    out.say(f"machine (as found): {_machine_line(idle)}")
    out.say(f"versions: torch {idle['torch_version']} (CUDA {_cuda_version()}), transformers "
            f"{_version('transformers')}, python {idle['python_version']}; bundle {bundle.digest[:16]} "
            f"(made on python {bundle.data['made_on']['python']}, {bundle.data['origin']})")
    rows = []
    for candidate in candidates:
        start = time.perf_counter()
        if start - started > settings.budget_s + settings.last_start_s:
            rows.append({**base_row(candidate, bundle, idle, settings), "status": "skipped", "elapsed_s": 0.0,
                         "error": f"not measured: the run had spent {start - started:.0f} s of its time budget"})
            out.progress(f"{candidate.name}: {rows[-1]['error']}")
            on_row(rows[-1])
            continue
        out.progress(f"{candidate.name}: measuring")
        try:
            figures = measure_candidate(candidate, bundle, settings, started, out.progress)
            env = environment(settings.device).to_dict()  # the clocks right after the work
            row = finish_row(base_row(candidate, bundle, env, settings), figures)
        except Exception as error:  # noqa: BLE001 - one failing candidate is its row; the others still run
            row = {**base_row(candidate, bundle, idle, settings), "status": "error",
                   "error": f"{type(error).__name__}: {error}"[:600]}
        row["elapsed_s"] = time.perf_counter() - start
        rows.append(row)
        on_row(row)
        out.progress(f"{candidate.name}: {row['status']} in {row['elapsed_s']:.0f} s"
                     + (f" ({row['error']})" if row["error"] else ""))
    return rows


def _machine_line(env: dict[str, Any]) -> str:
    gpu = (f"{env['gpu_name']} | driver {env['gpu_driver']} | {env['gpu_memory_mb']} MiB | cc "
           f"{env['gpu_compute_capability']} | SM clock {env['gpu_sm_clock_mhz']}/{env['gpu_sm_clock_max_mhz']} MHz | "
           f"memory clock {env['gpu_memory_clock_mhz']} MHz | {env['gpu_power_w']}/{env['gpu_power_limit_w']} W | "
           if env.get("gpu_name") else "no GPU (dry run) | ")
    return f"{gpu}CPU {env['cpu_model']}, {env['cores']} cores, flags {env['cpu_flags']}"


def results_folder(folder: Path, bundle: Bundle) -> Callable[[dict[str, Any]], None]:
    """A results folder (`study.store`) for the rows, which `reference.recorded(machine, "llm")` reads
    once committed; returns the function that writes one row into it."""
    from optlab.study.store import Store

    store = Store(folder)
    store.bind({"baseline": bundle.data["weights_sha256"], "data": bundle.digest, "name": "gpu-llm"})

    def put(row: dict[str, Any]) -> None:
        key = {"model": bundle.data["weights_sha256"], "data": bundle.digest, "recipe": json.loads(row["recipe_json"]),
               "machine": {k: row.get(k) for k in ("gpu_name", "gpu_driver", "torch_version", "transformers_version",
                                                   "cpu_model")}}
        store.put(sha256_json(key), {**row, "fingerprint": sha256_json(key)}, key)
    return put


LAYOUT = Layout((
    Col("candidate", "candidate", 44, "<"), Col("status", "status", 7, "<", before=" "),
    Col("goodput_per_s", "goodput/s", 10, spec=".4g"), Col("goodput_low", "low", 8, spec=".4g"),
    Col("goodput_high", "high", 8, spec=".4g"), Col("ttft_p50_ms", "TTFT p50", 9, spec=".1f"),
    Col("ttft_p99_ms", "TTFT p99", 9, spec=".1f"), Col("tpot_p50_ms", "TPOT p50", 9, spec=".2f"),
    Col("tpot_p99_ms", "TPOT p99", 9, spec=".2f"), Col("output_tokens_per_s", "out tok/s", 10, spec=".4g"),
    Col("decode_step_p50_ms", "step ms", 8, spec=".3f"), Col("perplexity", "ppl", 8, spec=".3f"),
    Col("agreement", "agree", 7, spec=".3f"), Col("peak_gpu_memory_mb", "peak MiB", 9, spec=".1f")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--export", metavar="DIR", help="write the bundle (here, where the zoo trained the target)")
    parser.add_argument("--bundle", metavar="DIR", default=".optlab-cache/gpu-llm", help="the bundle to measure")
    parser.add_argument("--out", metavar="DIR", help="write the results folder (DIR/llm), gpu_llm.json")
    parser.add_argument("--rounds", type=int, default=3, help="goodput searches per candidate (median kept)")
    parser.add_argument("--max-probes", type=int, default=10, help="probes per goodput search")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="no further rounds once this much has run (no further candidate 150 s later)")
    keys = ", ".join(c.key for c in CANDIDATES)
    parser.add_argument("--candidates", default=",".join(DEFAULT), help=f"comma-separated keys of {keys} (default: "
                        "all but batched-bf16, which stalled on an H100: docs/benchmarks/gpu.md)")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the same code")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode of the static-cache step (default reduce-overhead; 'none': eager)")
    args = parser.parse_args(argv or [])
    if args.export:
        export_bundle(Path(args.export))
        return 0
    if args.device.startswith("cuda"):
        from optlab.instruments.gpu import cuda_status

        ok, why = cuda_status()
        if not ok:
            print(f"{COMMAND}: not available here: {why}")
            return 0
    chosen = _chosen(args.candidates, args.compile_mode)
    settings = Settings(device=args.device, rounds=args.rounds, max_probes=args.max_probes, budget_s=args.budget_s,
                        command=" ".join([COMMAND, *(argv or [])]))
    bundle = Bundle.read(Path(args.bundle))
    out = Renderer("gpu-llm", settings.command)
    folder = Path(args.out) if args.out else None
    put = results_folder(folder / "llm", bundle) if folder else (lambda _row: None)
    rows = run(bundle, chosen, settings, out, on_row=put)
    out.say(f"\n08's trace ({len(bundle.trace)} requests), SLA {SLA.describe()}, goodput search per round "
            f"(median round shown; low/high over rounds):")
    out.table("rows", LAYOUT, rows)
    if folder:
        out.write_json(folder / "gpu_llm.json")
        out.say(f"results folder: {folder / 'llm'}")
    return 0


def _chosen(keys: str, compile_mode: str | None) -> list[GpuCandidate]:
    by_key = {c.key: c for c in CANDIDATES}
    unknown = [k for k in keys.split(",") if k and k not in by_key]
    if unknown:
        raise SystemExit(f"{COMMAND}: unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(by_key)}")
    chosen = [by_key[k] for k in keys.split(",") if k]
    if compile_mode is None:
        return chosen
    mode = None if compile_mode == "none" else compile_mode
    return [GpuCandidate(c.key, c.name + ("" if mode else " (eager step: dry run)"), c.precision, c.engine, c.cache,
                         mode) if c.compile else c for c in chosen]
