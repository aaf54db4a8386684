"""Recipes say *what* to do to a model; `optlab.techniques.apply(recipe, model, data)` does it.

Recipes are small frozen dataclasses with validated fields, a stable readable `name`
(the row key in a study) and a JSON round-trip. They hold no behaviour: the techniques
layer, above this one, registers a handler per recipe type.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar


class UnsupportedRecipe(Exception):
    """A recipe that cannot work here (missing runtime, no CUDA, wrong model kind). A study
    records it as an error row; the other recipes still run."""


# Stages order a Chain: model-level steps before runtime-level ones.
STAGE_DISTILL, STAGE_PRUNE, STAGE_MODEL_QUANT, STAGE_RUNTIME = 0, 1, 2, 3
STAGE_NAMES = {0: "distill", 1: "prune", 2: "model-level quantize", 3: "runtime (export/compile/runtime quantize)"}


def _check_choice(recipe: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{recipe}.{name}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}")


def _check_range(recipe: str, name: str, value: Any, low: float, high: float, *, high_open: bool = False,
                 integer: bool = False) -> None:
    kind = (int,) if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and low <= value and (
        value < high if high_open else value <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        what = "an integer" if integer else "a number"
        raise ValueError(f"{recipe}.{name}={value!r} is out of range; it must be {what} in [{low}, {high}{bracket}")


_RECIPE_KINDS: dict[str, type["Recipe"]] = {}


@dataclass(frozen=True)
class Recipe:
    """Base class. Subclasses set `kind`, `family` and `stage`; `optlab.techniques` applies them."""

    kind: ClassVar[str] = "recipe"
    family: ClassVar[str] = ""
    shown: ClassVar[tuple[str, ...]] = ()  # fields always in the name, even at their default
    # field -> (where it applies, predicate): a field set away from its default where it does not
    # apply is refused at construction, so it can never change a name or a fingerprint for nothing.
    applies: ClassVar[dict[str, tuple[str, Callable[[Any], bool]]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind != "recipe":
            _RECIPE_KINDS[cls.kind] = cls

    @property
    def stage(self) -> int:
        raise NotImplementedError

    def _check_applies(self) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        for name, (where, predicate) in self.applies.items():
            if getattr(self, name) != defaults[name] and not predicate(self):
                context = ", ".join(f"{f}={getattr(self, f)!r}" for f in ("runtime", "scheme") if hasattr(self, f))
                raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r} does not apply here "
                                 f"({context}): it applies only to {where}; leave it at its default "
                                 f"({defaults[name]!r})")

    @property
    def name(self) -> str:
        """Stable, readable key: the kind, its `shown` fields and every field that differs
        from its default."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in self.shown and f.default is not dataclasses.MISSING and value == f.default:
                continue
            parts.append(f"{f.name}={_fmt(value)}")
        return f"{self.kind}({', '.join(parts)})"

    def params(self) -> dict[str, Any]:
        """Every field, defaults included."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """The kind and the fields that are set (required, or away from their default): what a
        fingerprint is made of, so adding a defaulted field to a recipe keeps stored rows valid."""
        set_fields = {f.name: getattr(self, f.name) for f in fields(self)
                      if f.default is dataclasses.MISSING or getattr(self, f.name) != f.default}
        return {"kind": self.kind, **set_fields}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def __str__(self) -> str:
        return self.name


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def from_dict(data: dict[str, Any]) -> Recipe:
    """Rebuild a recipe from `Recipe.to_dict()` output (validation runs again)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in _RECIPE_KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}; valid kinds: {', '.join(sorted(_RECIPE_KINDS))}")
    cls = _RECIPE_KINDS[kind]
    if cls is Chain:
        return Chain(*(from_dict(step) for step in data["steps"]))
    return cls(**data)


def from_json(text: str) -> Recipe:
    return from_dict(json.loads(text))


def _split_top(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside parentheses (a nested recipe keeps its own commas and arrows)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        depth += (char == "(") - (char == ")")
        if depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i = i + len(separator)
            continue
        i += 1
    return [*parts, text[start:]]


def parse(text: str) -> Recipe:
    """The inverse of `Recipe.name`, for command lines: "quantize(scheme=static-int8,
    runtime=onnxruntime)" -> Quantize(...); steps joined by "->" make a Chain; a field may hold a
    recipe ("cascade(cheap=distill() -> compile(), threshold=0.9)")."""
    steps = _split_top(text, "->")
    if len(steps) > 1:
        return Chain(*(parse(part) for part in steps))
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", text, flags=re.DOTALL)
    if not match or match.group(1) not in _RECIPE_KINDS or match.group(1) == "chain":
        kinds = ", ".join(k for k in sorted(_RECIPE_KINDS) if k != "chain")
        raise ValueError(f"cannot read recipe {text!r}; write it as kind(field=value, ...) with kind one of {kinds}, "
                         f"e.g. quantize(scheme=dynamic-int8, runtime=onnxruntime)")
    cls = _RECIPE_KINDS[match.group(1)]
    allowed = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in _split_top(match.group(2), ","))):
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or key not in allowed:
            raise ValueError(f"recipe {text!r}: {part!r} is not field=value with a field of {cls.__name__} "
                             f"({', '.join(sorted(allowed))})")
        kwargs[key] = _parse_value(value)
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip("'\"")


# --- the recipes -------------------------------------------------------------------

def _calibrates(recipe: Any) -> bool:
    return recipe.scheme == "static-int8" or (recipe.runtime == "inc" and recipe.algorithm == "gptq")


QUANT_SCHEMES = {
    "torch": ("bf16", "fp16", "dynamic-int8"),
    "onnxruntime": ("dynamic-int8", "static-int8", "fp16"),
    "inc": ("weight-only-int8", "weight-only-int4", "static-int8", "autotune"),
}


@dataclass(frozen=True)
class Quantize(Recipe):
    """Lower precision. `runtime` picks the toolkit: torch (bf16/fp16/torchao dynamic int8),
    onnxruntime (dynamic/static QDQ int8, fp16) or inc (Intel Neural Compressor)."""

    kind: ClassVar[str] = "quantize"
    family: ClassVar[str] = "quantization"
    shown: ClassVar[tuple[str, ...]] = ("runtime",)

    scheme: str
    runtime: str = "torch"
    calibration: str = "minmax"  # static int8: minmax | entropy | percentile
    per_channel: bool = False
    calibration_samples: int = 256
    calibration_data: str = "representative"  # representative | skewed
    algorithm: str = "rtn"  # weight-only: rtn | gptq
    group_size: int = 32  # weight-only int4/int8 group size (-1 = per channel)
    tolerable_loss: float = 0.01  # autotune: relative accuracy loss allowed
    autocast: bool = False  # torch bf16/fp16: autocast (fp32 weights) instead of casting the model

    applies: ClassVar = {
        "calibration": ("runtime='onnxruntime' with scheme='static-int8'",
                        lambda r: r.runtime == "onnxruntime" and r.scheme == "static-int8"),
        "per_channel": ("runtime='onnxruntime' with an int8 scheme",
                        lambda r: r.runtime == "onnxruntime" and r.scheme in ("dynamic-int8", "static-int8")),
        "calibration_samples": ("scheme='static-int8', or runtime='inc' with algorithm='gptq'", _calibrates),
        "calibration_data": ("scheme='static-int8', or runtime='inc' with algorithm='gptq'", _calibrates),
        "algorithm": ("runtime='inc' with a weight-only scheme",
                      lambda r: r.runtime == "inc" and r.scheme.startswith("weight-only")),
        "group_size": ("runtime='inc' with a weight-only scheme or autotune",
                       lambda r: r.runtime == "inc" and r.scheme != "static-int8"),
        "tolerable_loss": ("runtime='inc' with scheme='autotune'",
                           lambda r: r.runtime == "inc" and r.scheme == "autotune"),
        "autocast": ("runtime='torch' with scheme 'bf16' or 'fp16'",
                     lambda r: r.runtime == "torch" and r.scheme in ("bf16", "fp16")),
    }

    def __post_init__(self):
        _check_choice("Quantize", "runtime", self.runtime, tuple(QUANT_SCHEMES))
        _check_choice("Quantize", "scheme", self.scheme, QUANT_SCHEMES[self.runtime])
        _check_choice("Quantize", "calibration", self.calibration, ("minmax", "entropy", "percentile"))
        _check_choice("Quantize", "per_channel", self.per_channel, (False, True))
        _check_range("Quantize", "calibration_samples", self.calibration_samples, 1, 1_000_000, integer=True)
        _check_choice("Quantize", "calibration_data", self.calibration_data, ("representative", "skewed"))
        _check_choice("Quantize", "algorithm", self.algorithm, ("rtn", "gptq"))
        if self.group_size != -1:
            _check_range("Quantize", "group_size", self.group_size, 1, 4096, integer=True)
        _check_range("Quantize", "tolerable_loss", self.tolerable_loss, 0.0, 1.0, high_open=True)
        _check_choice("Quantize", "autocast", self.autocast, (False, True))
        self._check_applies()

    @property
    def stage(self) -> int:
        return STAGE_RUNTIME if self.runtime == "onnxruntime" else STAGE_MODEL_QUANT


@dataclass(frozen=True)
class Compile(Recipe):
    """Graph compilation / a different runtime: ONNX Runtime (graph level, provider),
    OpenVINO on the exported ONNX file, or torch.compile. Threads belong to the workload."""

    kind: ClassVar[str] = "compile"
    family: ClassVar[str] = "compilation"
    shown: ClassVar[tuple[str, ...]] = ("runtime",)

    runtime: str = "onnxruntime"  # onnxruntime | openvino | torch.compile
    graph_level: str = "all"  # onnxruntime: disabled | basic | extended | all
    provider: str = "cpu"  # cpu | cuda
    mode: str = "default"  # torch.compile: default | reduce-overhead | max-autotune
    freezing: bool = True  # torch.compile: Inductor freezing (constant-folds weights)
    dynamic: bool | None = None  # torch.compile: None = torch's automatic dynamic shapes (specialize,
    # then one dynamic graph after the first new shape); True forces dynamic (slow on CPU here);
    # False recompiles per shape

    applies: ClassVar = {
        "graph_level": ("runtime='onnxruntime'", lambda r: r.runtime == "onnxruntime"),
        "provider": ("runtime='onnxruntime' (OpenVINO and torch.compile run on the CPU here)",
                     lambda r: r.runtime == "onnxruntime"),
        "mode": ("runtime='torch.compile'", lambda r: r.runtime == "torch.compile"),
        "freezing": ("runtime='torch.compile'", lambda r: r.runtime == "torch.compile"),
        "dynamic": ("runtime='torch.compile'", lambda r: r.runtime == "torch.compile"),
    }

    def __post_init__(self):
        _check_choice("Compile", "runtime", self.runtime, ("onnxruntime", "openvino", "torch.compile"))
        _check_choice("Compile", "graph_level", self.graph_level, ("disabled", "basic", "extended", "all"))
        _check_choice("Compile", "provider", self.provider, ("cpu", "cuda"))
        _check_choice("Compile", "mode", self.mode, ("default", "reduce-overhead", "max-autotune"))
        _check_choice("Compile", "freezing", self.freezing, (False, True))
        _check_choice("Compile", "dynamic", self.dynamic, (None, False, True))
        self._check_applies()

    @property
    def stage(self) -> int:
        return STAGE_RUNTIME


@dataclass(frozen=True)
class Prune(Recipe):
    """Magnitude pruning: unstructured (zeros, torch.nn.utils.prune) or structured
    (channels/units/heads physically removed with torch-pruning), then optional fine-tuning."""

    kind: ClassVar[str] = "prune"
    family: ClassVar[str] = "pruning"

    sparsity: float
    structured: bool = False
    scope: str = "global"  # global | layer
    finetune_epochs: int = 1
    finetune_lr: float | None = None  # None: the technique's default for the model

    def __post_init__(self):
        _check_range("Prune", "sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        _check_choice("Prune", "structured", self.structured, (False, True))
        _check_choice("Prune", "scope", self.scope, ("global", "layer"))
        _check_range("Prune", "finetune_epochs", self.finetune_epochs, 0, 1000, integer=True)
        if self.finetune_lr is not None:
            _check_range("Prune", "finetune_lr", self.finetune_lr, 0.0, 1e6)

    @property
    def stage(self) -> int:
        return STAGE_PRUNE


def student_path(student: Any) -> str:
    """A Distill student as a string: a zoo size name or "module:qualname" as given, a class or
    function (or a module object, by its class) as its import path; what has none (a class defined
    inside a function, a lambda) is refused. A notebook's own class is "__main__:Name": it resolves
    in the process that defined it."""
    if isinstance(student, str):
        if not student:
            raise ValueError("Distill.student='' must be a zoo student size or an import path 'package.module:factory'")
        return student
    factory = student if isinstance(student, type) or not hasattr(student, "state_dict") else type(student)
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not callable(factory) or not module or "<" in qualname:
        raise ValueError(f"Distill.student={student!r} cannot be written down (a recipe is a JSON line): define the "
                         f"student class or a function returning it at the top level of an importable module and "
                         f"pass it, or its path 'package.module:factory'")
    return f"{module}:{qualname}"


@dataclass(frozen=True)
class Distill(Recipe):
    """Teacher -> student with a KD loss: softened teacher probabilities at `temperature`
    mixed with the hard-label loss by `alpha`. `from_scratch=True` is the control: the same
    student and budget with labels only."""

    kind: ClassVar[str] = "distill"
    family: ClassVar[str] = "distillation"
    shown: ClassVar[tuple[str, ...]] = ("temperature",)

    # A student size the zoo defines for this dataset, or for an analyst's own data the import path
    # "package.module:factory" of a class or function that returns a fresh torch module (a class, a
    # function or a module whose class is importable may be passed; it is stored as that path, so
    # the recipe stays one JSON line).
    student: str = "student"
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the distillation term; 1 - alpha on hard labels
    epochs: int | None = None  # None: the zoo's training budget for the student
    from_scratch: bool = False
    lr: float | None = None  # None: the zoo's learning rate for the student

    def __post_init__(self):
        object.__setattr__(self, "student", student_path(self.student))
        _check_range("Distill", "temperature", self.temperature, 0.1, 100.0)
        _check_range("Distill", "alpha", self.alpha, 0.0, 1.0)
        if self.epochs is not None:
            _check_range("Distill", "epochs", self.epochs, 1, 1000, integer=True)
        _check_choice("Distill", "from_scratch", self.from_scratch, (False, True))
        if self.lr is not None:
            _check_range("Distill", "lr", self.lr, 0.0, 1e6)

    @property
    def name(self) -> str:
        if not self.from_scratch:
            return super().name
        # The control trains on labels only: temperature and alpha do not apply to it.
        parts = [f"{f.name}={_fmt(getattr(self, f.name))}" for f in fields(self)
                 if f.name not in ("temperature", "alpha") and getattr(self, f.name) != f.default
                 or f.name == "from_scratch"]
        return f"distill({', '.join(parts)})"

    @property
    def stage(self) -> int:
        return STAGE_DISTILL


@dataclass(frozen=True, init=False)
class Chain(Recipe):
    """Recipes applied left to right, model-level (distill, prune) before runtime-level."""

    kind: ClassVar[str] = "chain"
    family: ClassVar[str] = "chain"

    steps: tuple[Recipe, ...]

    def __init__(self, *steps: Recipe):
        if len(steps) == 1 and isinstance(steps[0], (list, tuple)):
            steps = tuple(steps[0])
        if not steps:
            raise ValueError("Chain() needs at least one recipe, e.g. Chain(Prune(0.5), Quantize('dynamic-int8'))")
        for step in steps:
            if not isinstance(step, Recipe) or isinstance(step, Chain):
                raise ValueError(f"Chain steps must be recipes (not nested chains); got {step!r}")
            if step.kind == "cascade":
                raise ValueError("a Cascade routes between two models and cannot be a Chain step; put the chain "
                                 "inside it: Cascade(cheap=Chain(...))")
        for before, after in zip(steps, steps[1:], strict=False):
            if after.stage < before.stage:
                raise ValueError(
                    f"Chain order: {after.name} ({STAGE_NAMES[after.stage]}) cannot follow {before.name} "
                    f"({STAGE_NAMES[before.stage]}); put model-level steps (distill, prune) before "
                    f"runtime-level ones (export, runtime quantize, compile)")
        object.__setattr__(self, "steps", tuple(steps))

    @property
    def stage(self) -> int:
        return self.steps[0].stage

    @property
    def name(self) -> str:
        return " -> ".join(step.name for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": [step.to_dict() for step in self.steps]}

    def params(self) -> dict[str, Any]:
        return {"steps": [step.to_dict() for step in self.steps]}


GPU_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
GPU_GRAPHS = ("none", "compile", "compile-cudagraphs", "manual")
GPU_QUANTIZE = ("none", "int8", "float8")
GPU_SPARSITY = ("none", "2:4")


@dataclass(frozen=True)
class OnDevice(Recipe):
    """Run the torch model on a GPU: a precision (fp32; TF32 matmuls; bf16/fp16 weights, or
    autocast over fp32 weights), how its launches are issued (eager; `torch.compile`;
    `torch.compile(mode="reduce-overhead")`, which replays CUDA graphs; or CUDA graphs captured by
    hand per input shape, for batch-1 latency), torchao int8/float8 dynamic quantization of the
    linear layers, and 2:4 semi-structured sparsity of the linear layers (Ampere and newer)."""

    kind: ClassVar[str] = "ondevice"
    family: ClassVar[str] = "compilation"
    shown: ClassVar[tuple[str, ...]] = ("device", "precision")

    device: str = "cuda"  # cuda | cuda:N
    precision: str = "fp32"  # fp32 | tf32 | bf16 | fp16
    autocast: bool = False  # bf16/fp16 through torch.autocast (fp32 weights) instead of casting the model
    graphs: str = "none"  # none | compile | compile-cudagraphs | manual
    quantize: str = "none"  # none | int8 | float8: torchao dynamic activation x weight, linear layers
    sparsity: str = "none"  # none | 2:4: magnitude 2:4 mask on linear weights, stored semi-structured

    applies: ClassVar = {
        "autocast": ("precision 'bf16' or 'fp16'", lambda r: r.precision in ("bf16", "fp16")),
    }

    def __post_init__(self):
        device = self.device
        if not (isinstance(device, str) and (device == "cuda" or (device.startswith("cuda:")
                                                                   and device[5:].isdigit()))):
            raise ValueError(f"OnDevice.device={device!r} is not a CUDA device; write 'cuda' or 'cuda:N' "
                             f"(CPU candidates come from the other recipes)")
        _check_choice("OnDevice", "precision", self.precision, GPU_PRECISIONS)
        _check_choice("OnDevice", "autocast", self.autocast, (False, True))
        _check_choice("OnDevice", "graphs", self.graphs, GPU_GRAPHS)
        _check_choice("OnDevice", "quantize", self.quantize, GPU_QUANTIZE)
        _check_choice("OnDevice", "sparsity", self.sparsity, GPU_SPARSITY)
        self._check_applies()
        if self.quantize == "float8" and (self.precision != "bf16" or self.autocast):
            raise ValueError("OnDevice.quantize='float8' needs precision='bf16' without autocast (torchao's float8 "
                             "layers take bf16 activations); set precision='bf16'")
        if self.quantize == "int8" and (self.precision not in ("fp32", "bf16") or self.autocast):
            raise ValueError("OnDevice.quantize='int8' needs precision 'fp32' or 'bf16' without autocast; "
                             "set precision='bf16'")
        if self.sparsity == "2:4" and (self.precision not in ("bf16", "fp16") or self.autocast):
            raise ValueError("OnDevice.sparsity='2:4' needs precision 'bf16' or 'fp16' without autocast (the "
                             "semi-structured kernels take half-precision weights); set precision='bf16'")
        if self.sparsity != "none" and self.quantize != "none":
            raise ValueError("OnDevice: choose sparsity or quantize, not both (torchao's int8/float8 layers "
                             "do not take semi-structured weights here)")

    @property
    def stage(self) -> int:
        return STAGE_RUNTIME
