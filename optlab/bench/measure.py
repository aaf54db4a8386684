"""`python -m optlab.bench measure [--smoke]`: checks the measuring instruments against
instruments nobody here wrote, and prints the figures.

1. Harness overhead per timed call, against an empty callable (target < 2 us).
2. optlab's median vs `torch.utils.benchmark.Timer.blocked_autorange` on the same
   callables (~50 us and ~1 ms; target: within 10%).
3. A callable with an injected latency mixture (busy-waits, 2% slow tail): p50 and
   p99 recovered, with their errors.
4. A full `measure()` of a tiny torch MLP and the same model in ONNX Runtime, with
   cold start and peak memory from fresh processes.
On a shared machine the absolute figures are noisy; ratios in one run are what count.
"""
from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Timer

from optlab.bench.render import Renderer, missing, target, verdict
from optlab.instruments.environment import environment
from optlab.instruments.latency import Workload, measure
from optlab.instruments.timing import summarize, time_calls
from optlab.models.candidate import Candidate

# Injected latency: 98% fast U(0.20, 0.30) ms, 2% slow U(1.5, 2.5) ms. With a 2% tail the
# true p99 is the tail's median (2.0 ms); with exactly 1% it would sit in the gap between
# the modes and be undefined. True p50 = 0.20 + 0.10 * 0.5 / 0.98 ms.
FAST_MS, SLOW_MS, SLOW_SHARE = (0.20, 0.30), (1.5, 2.5), 0.02
TRUE_P50_MS = FAST_MS[0] + (FAST_MS[1] - FAST_MS[0]) * 0.5 / (1 - SLOW_SHARE)
TRUE_P99_MS = SLOW_MS[0] + (SLOW_MS[1] - SLOW_MS[0]) * (0.99 - (1 - SLOW_SHARE)) / SLOW_SHARE


def draw_latencies_ms(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    slow = rng.random(n) < SLOW_SHARE
    return np.where(slow, rng.uniform(*SLOW_MS, n), rng.uniform(*FAST_MS, n))


def busy_wait_ns(duration_ns: int) -> None:
    end = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < end:
        pass


COMMAND = "python -m optlab.bench measure"
KEYS = ("p50_ms", "p99_ms", "p99_ci_low_ms", "p99_ci_high_ms", "noisy", "samples", "stop_reason",
        "throughput_per_s", "throughput_batch_size", "size_bytes", "param_count", "peak_rss_mb",
        "cold_start_ms", "cold_start_startup_ms", "cold_start_import_ms", "cold_start_load_ms",
        "cold_start_first_call_ms", "cold_start_imports_torch")


def overhead(smoke: bool) -> dict[str, float]:
    """The harness's own cost per timed call, on an empty callable."""
    run = time_calls(lambda batch: None, [None], warmup=100, min_samples=20_000 if not smoke else 2_000,
                     max_samples=200_000, budget_s=0.5 if smoke else 2.0, rel_ci=0.01)
    return {"calls": len(run.samples_ns), "median_us": float(np.median(run.samples_ns)) / 1e3,
            "p99_us": float(np.percentile(run.samples_ns, 99)) / 1e3}


def overhead_target(o: dict[str, float]) -> dict:
    ok = o["median_us"] < 2
    return target("harness overhead per timed call, median us", o["median_us"], ok, COMMAND,
                  f"1. harness overhead per timed call (empty callable, {o['calls']} calls): "
                  f"median {o['median_us']:.3f} us, p99 {o['p99_us']:.3f} us "
                  f"[target < 2 us: {'ok' if ok else 'MISSED'}]")


def against_torch_timer(smoke: bool) -> pd.DataFrame:
    """optlab's median and mean vs torch's Timer median on two matmul callables (1 thread, interleaved)."""
    torch.set_num_threads(1)
    rows = []
    for label, size, reps in (("~50 us", 104, 1), ("~1 ms", 256, 3)):
        a = torch.randn(size, size)

        def fn(_batch=None, a=a, reps=reps):
            for _ in range(reps):
                torch.mm(a, a)

        ours, our_means, theirs = [], [], []
        for _ in range(1 if smoke else 3):
            run = time_calls(fn, [None], warmup=20, min_samples=200, max_samples=20_000,
                             budget_s=0.3 if smoke else 1.0, rel_ci=0.05)
            ours.append(float(np.median(run.samples_ns)) / 1e6)
            our_means.append(float(np.mean(run.samples_ns)) / 1e6)
            timer = Timer(stmt="fn()", globals={"fn": fn})
            theirs.append(timer.blocked_autorange(min_run_time=0.3 if smoke else 1.0).median * 1e3)
        o, mean, t = float(np.median(ours)), float(np.median(our_means)), float(np.median(theirs))
        rows.append({"callable": label, "optlab_p50_ms": o, "timer_median_ms": t, "ratio": o / t,
                     "optlab_mean_ms": mean, "mean_ratio": mean / t})
    return pd.DataFrame(rows)


def timer_targets(frame: pd.DataFrame) -> list[dict]:
    out = []
    for r in frame.to_dict(orient="records"):
        ok = abs(r["ratio"] - 1) <= 0.10
        out.append(target(f"optlab p50 / torch Timer median, {r['callable']}", r["ratio"], ok, COMMAND,
                          f"   {r['callable']}: optlab p50 {r['optlab_p50_ms']:.4f} ms, torch Timer median "
                          f"{r['timer_median_ms']:.4f} ms, ratio {r['ratio']:.3f} "
                          f"[target within 10%: {verdict(ok, 'ok')}]; optlab mean {r['optlab_mean_ms']:.4f} ms, "
                          f"ratio {r['mean_ratio']:.3f}"))
    return out


def injected(smoke: bool) -> dict:
    """Times busy-waits drawn from a known mixture: the recovered p50/p99 beside the injected and true ones."""
    n = 3_000 if smoke else 20_000
    durations = (draw_latencies_ms(n + 50) * 1e6).astype(np.int64)
    position = iter(range(len(durations)))

    def fn(_batch):
        busy_wait_ns(int(durations[next(position)]))

    run = time_calls(fn, [None], warmup=50, min_samples=n, max_samples=n, budget_s=60.0)
    stats = summarize(run.samples_ns)
    drawn = durations[50:50 + len(run.samples_ns)] / 1e6
    quantiles = pd.DataFrame([{"quantile": q, "measured_ms": m, "injected_ms": float(np.percentile(drawn, q)),
                               "true_ms": t} for q, m, t in ((50, stats.p50_ms, TRUE_P50_MS),
                                                             (99, stats.p99_ms, TRUE_P99_MS))])
    excess_ms = run.samples_ns / 1e6 - drawn
    return {"quantiles": quantiles, "samples": stats.samples, "p99_ci_low_ms": stats.p99_ci_low_ms,
            "p99_ci_high_ms": stats.p99_ci_high_ms, "noisy": stats.noisy,
            "excess_median_us": 1e3 * float(np.median(excess_ms)),
            "delayed_share": float(np.mean(excess_ms > 0.5))}


def injected_lines(result: dict) -> list[str]:
    lines = [f"3. injected mixture (98% U{FAST_MS} ms, 2% U{SLOW_MS} ms busy-waits; {result['samples']} calls):"]
    for r in result["quantiles"].to_dict(orient="records"):
        lines.append(f"   p{r['quantile']}: measured {r['measured_ms']:.4f} ms, injected {r['injected_ms']:.4f} ms, "
                     f"true {r['true_ms']:.4f} ms; error vs injected "
                     f"{100 * (r['measured_ms'] / r['injected_ms'] - 1):+.2f}%, vs true "
                     f"{100 * (r['measured_ms'] / r['true_ms'] - 1):+.2f}%")
    lines.append(f"   p99 95% CI [{result['p99_ci_low_ms']:.4f}, {result['p99_ci_high_ms']:.4f}] ms, "
                 f"noisy={result['noisy']}; per call, measured - injected: median {result['excess_median_us']:.2f} us, "
                 f"{100 * result['delayed_share']:.2f}% of calls delayed > 0.5 ms (preempted: another process ran)")
    return lines


LOADER = textwrap.dedent('''
    import onnxruntime as ort

    def load(path, threads=1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(None, {"x": batch["x"]})[0]
''')


def candidates_demo(smoke: bool, workdir: Path) -> tuple[Workload, pd.DataFrame]:
    """`measure()` of a tiny torch MLP and the same model in ONNX Runtime: one row each."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    onnx_path = workdir / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(1, 64),), str(onnx_path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    (workdir / "optlab_bench_ort_loader.py").write_text(LOADER)
    sys.path.insert(0, str(workdir))
    import optlab_bench_ort_loader  # written just above: the loader a fresh process imports for cold start

    def torch_predict(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch["x"])).numpy()

    eager = Candidate("mlp-eager", torch_predict, model=model)
    ort_candidate = Candidate("mlp-ort", optlab_bench_ort_loader.load(str(onnx_path)), runtime="onnxruntime",
                              family="compilation", artifact_path=onnx_path, loader="optlab_bench_ort_loader:load",
                              loader_options={"threads": 1}, meta={"threads": 1})
    inputs = {"x": np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)}
    workload = Workload.smoke(threads=1) if smoke else Workload(threads=1, cold_start_repeats=3)
    rows = [{"candidate": c.name, **measure(c, inputs, workload).to_row()} for c in (eager, ort_candidate)]
    return workload, pd.DataFrame(rows)


def _shown(value) -> str:
    if missing(value):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else f"{value}"


def candidate_lines(workload: Workload, frame: pd.DataFrame) -> list[str]:
    lines = [f"4. measure() of a 64-256-10 MLP, batch {workload.batch_size}, threads {workload.threads}:"]
    for row in frame.to_dict(orient="records"):
        shown = ", ".join(f"{k}={_shown(row[k])}" for k in KEYS)
        lines.append(textwrap.fill(f"   {row['candidate']}: {shown}", width=110, subsequent_indent="      "))
    return lines


def main(argv: list[str]) -> int:
    smoke = "--smoke" in argv
    json_path = argv[argv.index("--json") + 1] if "--json" in argv[:-1] else None
    out = Renderer("measure", " ".join([COMMAND, *argv]))
    env = environment()
    out.say(f"optlab measure bench{' (smoke)' if smoke else ''} on {env.cpu_model}, {env.cores} cores, "
            f"flags: {env.cpu_flags}; torch {env.torch_version}, onnxruntime {env.onnxruntime_version}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    shown = "n/a" if load is None else f"{load:.2f}"
    contended = load is not None and load > 0.5 * env.logical_cores
    out.say(f"   load average {shown} on {env.logical_cores} logical cores"
            f"{' (contended: absolute times are noisy; compare ratios)' if contended else ''}")
    out.targets([overhead_target(overhead(smoke))])
    out.say("2. median vs torch.utils.benchmark.Timer.blocked_autorange (same callable, 1 thread, interleaved x3):")
    timer = against_torch_timer(smoke)
    out.keep("against_torch_timer", timer)
    out.targets(timer_targets(timer))
    out.say("   (Timer's median is a median of block means: on a contended machine it absorbs preemptions and "
            "tracks optlab's mean, while optlab's per-call p50 stays at the uncontended cost)")
    mixture = injected(smoke)
    out.keep("injected_quantiles", mixture["quantiles"])
    for line in injected_lines(mixture):
        out.say(line)
    with tempfile.TemporaryDirectory(prefix="optlab-bench-") as tmp:
        workload, frame = candidates_demo(smoke, Path(tmp))
    out.keep("candidates", frame)
    for line in candidate_lines(workload, frame):
        out.say(line)
    out.write_json(json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
