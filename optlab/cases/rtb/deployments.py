"""Deployments of a click model for real-time bidding: how a bid request becomes a score.

A `Deployment` is a candidate plus everything around it that a bidder runs per request: the
payload format (`json` or `msgpack`, the same bid-request object either way), the feature
preprocessing, the batching policy, workers and threads, and admission control. The same object
serves in process (`InProcess`, for `loadgen.run`) and behind HTTP (`optlab.cases.rtb.service`), so the
two measurements differ only by the sockets (and, for a "lean" deployment, by where batching
happens: the `Server`'s threads in process, the service's event loop over HTTP).

The three steps (`NAIVE`, `REASONABLE`, `OPTIMIZED`), each a real gain over the one before:
naive is eager PyTorch with per-field preprocessing; reasonable changes no number the model
computes (the same weights in ONNX Runtime with graph optimizations, fp32) and vectorizes the
preprocessing, still one request per call; optimized takes the quantized candidate within the
quality gate, msgpack, batching and deadline shedding, and over HTTP the lean app on one process
per core. (Vectorized preprocessing alone saves a few microseconds against a ~100 us PyTorch call:
too little to be a step of its own, so reasonable pairs it with the cheaper runtime.)

Preprocessing, by registry (`PREPROCESSORS`):
* `naive`: what a first version does, one request at a time: for each categorical field, a
  look-up of the field in the impression dict and of its value in that field's own vocabulary
  dict, appended to a Python list; for each numeric field, a look-up and `float()`; then two small
  numpy arrays. Every field is checked with its own `if`. Nothing is reloaded per request.
* `vectorized`: the same checks done at once: `operator.itemgetter` pulls all fields in one call,
  one flat vocabulary dict (values are unique across fields: "publisher-82") encodes them through
  `map`, the numeric values are checked together in Python (their types, `math.isfinite`) and each
  array is built once in its final dtype. (Checking them with numpy instead, an `isfinite` ufunc on
  a five-value array, made this step slower than `naive`: numpy's per-call cost outweighs its speed
  on a handful of values.) The per-field checks run only when the fast path fails, for the message.
* `cached`: `vectorized` with the entity part (publisher, ad slot, creative) kept in a `FeatureCache`
  keyed by those ids (entities repeat across requests, Zipf-like; whole requests do not). Here an
  entity's features are three dictionary look-ups, so the cache saves little: it is there for
  features that cost more (a store or a model per entity), and its hit rate is reported.

`vectorized` and `cached` also have a row form (`preprocess.row`: a message -> its ids and numbers as
tuples), so a deployment with `prepare="per_batch"` decodes and preprocesses a whole batch in the
server's worker (`Deployment.prepare_batch`): each input array is built once per batch, not once per
request and then concatenated, and the thread that receives requests only queues their bodies.

Bad input raises `BadRequest` (missing field, wrong type, unknown id) before the model runs.
"""
from __future__ import annotations

import math
import operator
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from optlab.serving.cache import FeatureCache
from optlab.serving.codecs import CODECS, MAX_BODY_BYTES, BadRequest, Codec, codec
from optlab.serving.policies import Admission, Policy, parse_policy
from optlab.serving.server import ERROR, Reply, Server

_NUMBER_TYPES = frozenset({float, int})  # bool is a subclass of int, not the type int


# ---- the bid request's schema ----------------------------------------------------------------
@dataclass(frozen=True)
class BidSchema:
    """Field names and vocabularies of a bid request: categorical ids are sent as "field-<index>"."""

    fields: tuple[str, ...]
    cardinalities: tuple[int, ...]
    numeric: tuple[str, ...]

    @classmethod
    def from_data(cls, data) -> "BidSchema":
        meta = data.meta
        if "categorical_fields" not in meta or "numeric_fields" not in meta:
            raise ValueError(f"dataset {data.name!r} has no bid-request schema (categorical_fields, numeric_fields); "
                             "use load('bids')")
        return cls(tuple(meta["categorical_fields"]), tuple(int(c) for c in meta["cardinalities"]),
                   tuple(meta["numeric_fields"]))

    def vocabularies(self) -> list[dict[str, int]]:
        return [{f"{f}-{v}": v for v in range(card)} for f, card in zip(self.fields, self.cardinalities, strict=True)]

    def message(self, categorical: np.ndarray, numeric: np.ndarray, request_id: str = "req-0") -> dict[str, Any]:
        """The bid request an exchange would send for one row of features."""
        imp = {"id": "1", **{f: f"{f}-{int(v)}" for f, v in zip(self.fields, categorical, strict=True)}}
        ext = {n: float(v) for n, v in zip(self.numeric, numeric, strict=True)}
        return {"id": request_id, "imp": [imp], "ext": ext}

    def messages(self, split, n: int, seed: int = 0) -> tuple[list[dict[str, Any]], np.ndarray]:
        """`n` bid requests from a split's rows (drawn with replacement past its length) and the rows."""
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(split), size=n, replace=n > len(split))
        cats, nums = split.inputs["categorical"][rows], split.inputs["numeric"][rows]
        return [self.message(cats[i], nums[i], f"req-{int(r)}") for i, r in enumerate(rows)], rows


# ---- payload formats: the serving layer's codecs, under the names this case has always used ----
Payload = Codec
PAYLOADS: dict[str, Codec] = CODECS
payload_format = codec


# ---- preprocessing ---------------------------------------------------------------------------
def _impression(message: Any) -> tuple[dict, dict]:
    if not isinstance(message, dict):
        raise BadRequest(f"a bid request is an object, got {type(message).__name__}")
    imps, ext = message.get("imp"), message.get("ext")
    if not isinstance(imps, list) or not imps or not isinstance(imps[0], dict):
        raise BadRequest("missing field 'imp': send a list with one impression object")
    if not isinstance(ext, dict):
        raise BadRequest("missing field 'ext': send an object with the numeric features")
    return imps[0], ext


def _unknown(schema: BidSchema, imp: dict) -> BadRequest:
    """The precise error for an impression that failed a fast encode."""
    vocab = schema.vocabularies()
    for j, name in enumerate(schema.fields):
        if name not in imp:
            return BadRequest(f"missing field 'imp[0].{name}'")
        value = imp[name]
        if not isinstance(value, str):
            return BadRequest(f"field 'imp[0].{name}' must be a string id like '{name}-0', got {type(value).__name__}")
        if value not in vocab[j]:
            return BadRequest(f"unknown {name} id {value[:40]!r}: not among the {schema.cardinalities[j]} known", 404
                              if name == "publisher" else 422)
    return BadRequest("could not encode the impression")


def _number(ext: dict, name: str) -> float:
    value = ext.get(name)
    if value is None:
        raise BadRequest(f"missing field 'ext.{name}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"field 'ext.{name}' must be a finite number, got {type(value).__name__} {str(value)[:20]}")
    return value


def naive_preprocessing(schema: BidSchema) -> Callable[[Any], dict[str, np.ndarray]]:
    vocabularies = dict(zip(schema.fields, schema.vocabularies(), strict=True))

    def preprocess(message: Any) -> dict[str, np.ndarray]:
        imp, ext = _impression(message)
        categorical = []
        for name in schema.fields:
            if name not in imp:
                raise BadRequest(f"missing field 'imp[0].{name}'")
            value = imp[name]
            if not isinstance(value, str):
                raise BadRequest(f"field 'imp[0].{name}' must be a string id like '{name}-0', "
                                 f"got {type(value).__name__}")
            if value not in vocabularies[name]:
                raise _unknown(schema, imp)
            categorical.append(vocabularies[name][value])
        numeric = []
        for name in schema.numeric:
            numeric.append(float(_number(ext, name)))
        return {"categorical": np.array([categorical], dtype=np.int64),
                "numeric": np.array([numeric], dtype=np.float32)}

    return preprocess


def _numeric_reader(schema: BidSchema) -> Callable[[dict], np.ndarray]:
    """The numeric features of `ext` as a (1, n) float32 row, each checked only when the fast path fails.

    The fast path checks in Python (the set of value types, `math.isfinite` over the values) and
    builds the array once in its final dtype: for five values, every numpy call (an `isfinite` ufunc
    and its `.all()`, a float64 array then `astype`) costs more than the Python work it replaces."""
    n_numeric = len(schema.numeric)
    get_numbers = operator.itemgetter(*schema.numeric)
    if n_numeric == 1:  # itemgetter of one name returns the value, not a tuple
        get_numbers = lambda ext: (ext[schema.numeric[0]],)  # noqa: E731
    isfinite = math.isfinite

    def values(ext: dict) -> tuple:
        try:
            found = get_numbers(ext)
            fast = set(map(type, found)) <= _NUMBER_TYPES and all(map(isfinite, found))
        except (KeyError, TypeError, OverflowError):
            fast = False
        if not fast:
            for name in schema.numeric:
                _number(ext, name)
        return found

    def read(ext: dict) -> np.ndarray:
        return np.array([values(ext)], dtype=np.float32)

    read.values = values
    return read


def vectorized_preprocessing(schema: BidSchema):
    flat = {key: index for vocab in schema.vocabularies() for key, index in vocab.items()}
    get_ids, lookup, read_numeric = operator.itemgetter(*schema.fields), flat.__getitem__, _numeric_reader(schema)

    numeric_values = read_numeric.values

    def preprocess(message: Any) -> dict[str, np.ndarray]:
        imp, ext = _impression(message)
        try:
            categorical = np.array([list(map(lookup, get_ids(imp)))], dtype=np.int64)
        except (KeyError, TypeError):
            raise _unknown(schema, imp) from None
        return {"categorical": categorical, "numeric": read_numeric(ext)}

    def row(message: Any) -> tuple[tuple, tuple]:
        imp, ext = _impression(message)
        try:
            categorical = tuple(map(lookup, get_ids(imp)))
        except (KeyError, TypeError):
            raise _unknown(schema, imp) from None
        return categorical, numeric_values(ext)

    preprocess.row = row
    return preprocess


ENTITY_FIELDS = ("publisher", "ad_slot", "creative")


def cached_preprocessing(schema: BidSchema, max_bytes: int = 4 * 2**20, entities: tuple[str, ...] = ENTITY_FIELDS):
    """`vectorized`, with the entity part of the features (publisher, slot, creative: they repeat
    across requests, Zipf-like) held in a `FeatureCache`; the per-request context is encoded each time."""
    flat = {key: index for vocab in schema.vocabularies() for key, index in vocab.items()}
    entities = tuple(f for f in entities if f in schema.fields)
    context = tuple(f for f in schema.fields if f not in entities)
    if len(entities) < 2 or len(context) < 2:
        return vectorized_preprocessing(schema)
    get_entity, get_context = operator.itemgetter(*entities), operator.itemgetter(*context)
    lookup, read_numeric = flat.__getitem__, _numeric_reader(schema)
    in_schema_order = operator.itemgetter(*[(entities + context).index(f) for f in schema.fields])
    cache = FeatureCache(lambda ids: tuple(map(lookup, ids)), max_bytes)

    numeric_values = read_numeric.values

    def row(message: Any) -> tuple[tuple, tuple]:
        imp, ext = _impression(message)
        try:
            ids = cache(get_entity(imp)) + tuple(map(lookup, get_context(imp)))
        except (KeyError, TypeError):
            raise _unknown(schema, imp) from None
        return in_schema_order(ids), numeric_values(ext)

    def preprocess(message: Any) -> dict[str, np.ndarray]:
        categorical, numeric = row(message)
        return {"categorical": np.array([categorical], dtype=np.int64),
                "numeric": np.array([numeric], dtype=np.float32)}

    preprocess.feature_cache, preprocess.row = cache, row
    return preprocess


PREPROCESSORS: dict[str, Callable[[BidSchema], Callable]] = {
    "naive": naive_preprocessing, "vectorized": vectorized_preprocessing, "cached": cached_preprocessing}
ROW_FORM = ("vectorized", "cached")  # their functions have `.row`: a batch can be prepared at once


# ---- a deployment --------------------------------------------------------------------------
MODELS = ("baseline", "graph-optimized", "chosen")
HTTP_APPS = ("starlette", "lean")
HTTP_SERVERS = ("uvicorn", "granian")
PREPARE = ("per_request", "per_batch")


@dataclass(frozen=True)
class DeploymentConfig:
    """How a candidate is deployed: which model (`model`: the eager baseline, ONNX Runtime fp32 with
    graph optimizations, or the candidate chosen by the quality gate), preprocessing, payload
    format, batching, workers and threads in process; over HTTP, the app (`http_app`: "starlette"
    around the `Server`, or "lean": a raw ASGI app whose event loop batches concurrent requests),
    the server (`http_server`) and its processes (`processes`; 0 = one per `threads_per_worker`
    cores, so intra-op threads x processes <= cores). In process, `prepare` says where a body becomes
    features: "per_request" in the submitting thread, as an HTTP handler does, or "per_batch" in the
    server's worker, a whole batch at once (`Deployment.prepare_batch`)."""

    name: str
    preprocessing: str = "vectorized"
    payload: str = "json"
    policy: str = "none"
    workers: int = 1
    threads_per_worker: int = 1
    queue_limit: int = 4096
    deadline_ms: float | None = None
    model: str = "baseline"
    http_app: str = "starlette"
    http_server: str = "uvicorn"
    processes: int = 1
    prepare: str = "per_request"
    kind: ClassVar[str] = "deployment"

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSORS:
            raise ValueError(f"unknown preprocessing {self.preprocessing!r}; use one of {', '.join(PREPROCESSORS)}")
        payload_format(self.payload)
        parse_policy(self.policy)
        for value, known, what in ((self.model, MODELS, "model"), (self.http_app, HTTP_APPS, "http_app"),
                                   (self.http_server, HTTP_SERVERS, "http_server")):
            if value not in known:
                raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(known)}")
        if self.prepare not in PREPARE:
            raise ValueError(f"unknown prepare {self.prepare!r}; use one of {', '.join(PREPARE)}")
        if self.prepare == "per_batch" and self.preprocessing not in ROW_FORM:
            raise ValueError(f"prepare='per_batch' needs a preprocessing with a row form; {self.preprocessing!r} has "
                             f"none: use one of {', '.join(ROW_FORM)}")
        if int(self.processes) != self.processes or self.processes < 0:
            raise ValueError(f"processes must be an integer >= 0 (0 = one per core), got {self.processes!r}")

    def http_processes(self, cores: int) -> int:
        """Service processes over HTTP: `processes`, or (0) as many as fit `cores` at `threads_per_worker` each."""
        return self.processes or max(1, cores // max(1, self.threads_per_worker))

    @property
    def batching(self) -> Policy:
        return parse_policy(self.policy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The three steps. naive: what a first version does (eager PyTorch, per-field preprocessing, JSON).
# reasonable: what a careful first pass does without changing the model's numbers: the same weights
# exported to ONNX Runtime with graph optimizations (fp32; a model call ~5x cheaper at batch 1) and
# vectorized preprocessing; still JSON, one request per call, one worker (the simulator's check needs
# one server without batching). optimized: the quantized candidate chosen by the quality gate,
# msgpack, batching, deadline shedding; over HTTP the lean app (event-loop batching) on one
# process per core.
NAIVE = DeploymentConfig("naive", "naive", "json", "none", workers=1, threads_per_worker=2)
REASONABLE = DeploymentConfig("reasonable", "vectorized", "json", "none", workers=1, threads_per_worker=1,
                              model="graph-optimized")
OPTIMIZED = DeploymentConfig("optimized", "cached", "msgpack", "dynamic(max_batch=64, max_wait_ms=1)",
                             workers=1, threads_per_worker=1, deadline_ms=10.0, model="chosen", http_app="lean",
                             http_server="uvicorn", processes=0, prepare="per_batch")


def pick_model(config: DeploymentConfig, baseline, candidates: dict[str, Any], chosen: str):
    """The candidate `config.model` names: the baseline, the ONNX Runtime graph-optimized fp32 one
    (the baseline where it was not built, as in smoke runs), or the chosen one."""
    if config.model == "chosen":
        return candidates[chosen]
    if config.model == "graph-optimized":
        return next((c for name, c in candidates.items() if name.startswith("compile(")), baseline)
    return baseline


@dataclass
class Deployment:
    """A candidate deployed by `config` over `schema`; `server()` builds a fresh `Server`."""

    config: DeploymentConfig
    candidate: Any
    schema: BidSchema
    _preprocess: Callable = field(init=False, repr=False)

    def __post_init__(self):
        self._preprocess = PREPROCESSORS[self.config.preprocessing](self.schema)
        self.payload = payload_format(self.config.payload)

    @property
    def name(self) -> str:
        return self.config.name

    def decode(self, body: bytes) -> dict[str, np.ndarray]:
        """Body bytes -> model inputs, or `BadRequest`."""
        return self._preprocess(self._message(body))

    def _message(self, body: bytes) -> Any:
        """Body bytes -> the decoded bid request, or `BadRequest` (too large, or not this payload format)."""
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit; send one bid "
                             "request", 413)
        return self.payload.decode(body)

    def preprocess(self, message: Any) -> dict[str, np.ndarray]:
        """A decoded bid request -> model inputs, or `BadRequest`."""
        return self._preprocess(message)

    def encode(self, message: dict) -> bytes:
        return self.payload.encode(message)

    def feature_cache_stats(self) -> dict[str, float]:
        cache = getattr(self._preprocess, "feature_cache", None)
        return cache.stats() if cache is not None else {}

    def prepare_batch(self, bodies: list[bytes]) -> tuple[dict[str, np.ndarray], list[int], dict[int, str]]:
        """Bodies -> one model batch (each input array built once), each request's row count, and
        {position: error} for the bodies that are bad requests (left out of the batch)."""
        message, row = self._message, self._preprocess.row
        categorical, numeric, errors = [], [], {}
        for i, body in enumerate(bodies):
            try:
                ids, numbers = row(message(body))
            except BadRequest as exc:
                errors[i] = str(exc)
                continue
            categorical.append(ids)
            numeric.append(numbers)
        n, schema = len(categorical), self.schema
        batch = {"categorical": np.array(categorical, dtype=np.int64).reshape(n, len(schema.fields)),
                 "numeric": np.array(numeric, dtype=np.float32).reshape(n, len(schema.numeric))}
        return batch, [1] * n, errors

    def server(self, prepare: Callable | None = None) -> Server:
        """A fresh `Server` for features, or, with `prepare` (a `prepare_batch`), for raw bodies."""
        c = self.config
        return Server(self.candidate, c.batching, workers=c.workers, threads_per_worker=c.threads_per_worker,
                      admission=Admission(queue_limit=c.queue_limit, deadline_ms=c.deadline_ms), prepare=prepare)

    def bodies(self, split, n: int, seed: int = 0) -> list[bytes]:
        """`n` encoded bid requests from a split, in this deployment's payload format."""
        messages, _ = self.schema.messages(split, n, seed)
        return [self.encode(m) for m in messages]


class InProcess:
    """A `Server` fed with request *bodies*: decoding and preprocessing run in the submitting
    thread (as an HTTP handler does), then the features go to the server, or, with
    `prepare="per_batch"`, the body itself is queued and the worker prepares each batch at once. A
    request already past its deadline by its scheduled time is shed before it is decoded
    (`Server.shed_if_late`), so a backlog after a stall costs microseconds per request to clear, not a
    decode each. Duck-types the parts of `Server` that `loadgen.run` uses, so in-process and HTTP
    runs go through the same generator."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self._per_batch = deployment.config.prepare == "per_batch"
        self.server = deployment.server(self._prepare if self._per_batch else None)
        self.bad_requests = 0

    def _prepare(self, bodies: list[bytes]):
        batch, rows, errors = self.deployment.prepare_batch(bodies)
        self.bad_requests += len(errors)
        return batch, rows, errors

    def __getattr__(self, name):  # name, policy, workers, threads_per_worker, notes, counts, ...
        return getattr(self.server, name)

    def start(self) -> "InProcess":
        self.server.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.stop(timeout_s)

    def submit(self, body: bytes, request_id: int = 0, *, scheduled_ns=None, on_done=None, key=None) -> None:
        if scheduled_ns is not None and self.server.shed_if_late(request_id, scheduled_ns, on_done):
            return
        if self._per_batch:
            self.server.submit(body, request_id, scheduled_ns=scheduled_ns, on_done=on_done)
            return
        try:
            features = self.deployment.decode(body)
        except BadRequest as exc:
            self.bad_requests += 1
            if on_done is not None:
                now = time.monotonic_ns()
                on_done(Reply(request_id, ERROR, now, now, 0, error=str(exc)))
            return
        self.server.submit(features, request_id, scheduled_ns=scheduled_ns, on_done=on_done)

