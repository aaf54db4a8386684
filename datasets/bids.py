"""bids: synthetic real-time-bidding impressions drawn from a hidden click model.

Every impression has 8 categorical fields (publisher, ad slot, creative, device, os,
region, hour, weekday) and 5 numeric ones (log bid floor, log recency, frequency, page
depth, viewability). Its click probability comes from a hidden logistic model whose
signal is mostly *structure a linear model cannot express*: low-cardinality crosses
(device x hour, creative format x device), non-monotone numeric effects (a recency bump,
a U-shaped bid floor) and numeric x categorical interactions (recency x device,
viewability x format), plus moderate per-entity effects and a publisher-topic x
creative-topic affinity. The click is a Bernoulli draw; because the true probability is
known, the oracle AUC (the best any model can score) is known too.
"""
from __future__ import annotations

import numpy as np

VERSION = 3  # v1: per-entity effects too large; v2: mostly additive, LR tied the MLP (see README)
CATEGORICAL = ("publisher", "ad_slot", "creative", "device", "os", "region", "hour", "weekday")
NUMERIC = ("log_bid_floor", "log_recency_h", "frequency", "page_depth", "viewability")
DEVICES = ("desktop", "mobile", "tablet", "ctv")
# Fixed before any model was tuned on it (see datasets/README.md).
PARAMS = {
    "n": 1_000_000,
    "split_fractions": {"train": 0.7, "validation": 0.1, "test": 0.2},
    "publishers": 400, "publisher_zipf": 1.1, "slots_per_publisher": 4,
    "creatives": 300, "creative_zipf": 0.9, "topics": 10, "formats": ("banner", "video", "native"),
    "oses": 6, "regions": 60,
    "device_mix": (0.38, 0.5, 0.08, 0.04),
    "effect_std": {"publisher": 0.2, "slot": 0.1, "creative": 0.2, "region": 0.1, "os": 0.1, "topic": 0.25},
    "topic_match_bonus": 0.5, "interaction_scale": 2.0, "numeric_scale": 2.0,
    "base_logit": -3.7,
}


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def generate(seed: int = 0, n: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays keyed "split/name" (categorical, numeric, labels, p_true) and JSON-able meta."""
    P = PARAMS
    n = int(n or P["n"])
    rng = np.random.default_rng(seed)
    std = P["effect_std"]
    n_pub, n_cre, spp = P["publishers"], P["creatives"], P["slots_per_publisher"]

    # The hidden world: per-entity effects and latent attributes.
    pub_effect = rng.normal(0, std["publisher"], n_pub)
    pub_topic = rng.integers(0, P["topics"], n_pub)
    pub_floor = rng.normal(0.0, 0.6, n_pub)  # publishers price their inventory differently
    slot_effect = rng.normal(0, std["slot"], n_pub * spp)
    slot_weights = rng.dirichlet(np.ones(spp) * 1.5, n_pub)
    slot_view = rng.beta(4, 3, n_pub * spp)
    cre_effect = rng.normal(0, std["creative"], n_cre)
    cre_topic = rng.integers(0, P["topics"], n_cre)
    cre_format = rng.choice(len(P["formats"]), n_cre, p=[0.5, 0.25, 0.25])
    topic_affinity = rng.normal(0, std["topic"], (P["topics"], P["topics"]))
    topic_affinity[np.diag_indices(P["topics"])] += P["topic_match_bonus"]
    region_effect = rng.normal(0, std["region"], P["regions"])
    os_effect = rng.normal(0, std["os"], P["oses"])
    device_effect = np.array([0.0, 0.1, -0.1, -0.2])
    hours = np.arange(24)
    # Crosses with no main effect to speak of: each device has its own hours (centred per device).
    device_hour = np.stack([
        0.6 * ((hours >= 9) & (hours <= 17)),            # desktop: office hours
        0.6 * ((hours >= 19) | (hours <= 1)),            # mobile: evenings
        0.6 * ((hours >= 18) & (hours <= 22)),           # tablet: after dinner
        0.9 * ((hours >= 20) & (hours <= 23)),           # ctv: prime time
    ]).astype(float)
    device_hour -= device_hour.mean(axis=1, keepdims=True)
    format_device = np.array([[0.3, -0.4, 0.0, -0.6],     # banner
                              [-0.4, 0.5, 0.3, 0.7],      # video
                              [0.1, 0.2, -0.3, -0.4]])    # native

    # Impressions.
    publisher = rng.choice(n_pub, n, p=_zipf(n_pub, P["publisher_zipf"]))
    slot_k = (rng.random(n)[:, None] > np.cumsum(slot_weights[publisher], axis=1)).sum(axis=1).clip(0, spp - 1)
    ad_slot = publisher * spp + slot_k
    creative = rng.choice(n_cre, n, p=_zipf(n_cre, P["creative_zipf"]))
    device = rng.choice(4, n, p=P["device_mix"])
    os_ = np.where(device == 0, rng.integers(0, 2, n), np.where(device == 3, 5, rng.integers(2, 5, n)))
    region = rng.choice(P["regions"], n, p=_zipf(P["regions"], 0.7))
    hour = (rng.normal(15, 5, n).round().astype(np.int64)) % 24
    weekday = rng.integers(0, 7, n)
    log_bid_floor = pub_floor[publisher] + rng.normal(0, 0.5, n)
    log_recency_h = np.log1p(rng.exponential(24.0, n) * (rng.random(n) < 0.7) + rng.exponential(0.5, n))
    frequency = rng.poisson(1.2, n).astype(np.float64)
    page_depth = 1 + rng.geometric(0.35, n).astype(np.float64)
    viewability = np.clip(slot_view[ad_slot] + rng.normal(0, 0.1, n), 0, 1)

    fmt = cre_format[creative]
    mobile = (device == 1)
    logit = (P["base_logit"] + pub_effect[publisher] + slot_effect[ad_slot] + cre_effect[creative]
             + device_effect[device] + os_effect[os_] + region_effect[region]
             + 0.1 * np.sin(2 * np.pi * (hour - 6) / 24) + 0.1 * (weekday >= 5)
             + P["interaction_scale"] * (device_hour[device, hour] + format_device[fmt, device])
             + topic_affinity[pub_topic[publisher], cre_topic[creative]]
             + P["numeric_scale"] * (
                 # recency bump: a visit a few hours ago converts best, fresh bounces and old users less
                 0.8 * np.exp(-0.5 * ((log_recency_h - 1.8) / 0.6) ** 2) * np.where(mobile, 1.5, 0.6)
                 + 0.3 * (frequency == 0) - 0.15 * np.abs(frequency - 2)      # novelty, then fatigue
                 + 0.25 * (log_bid_floor ** 2 - 0.5)                           # U shape: remnant and premium
                 + np.where(fmt == 1, 1.2, 0.3) * (viewability - 0.55)         # video needs to be seen
                 - 0.25 * (page_depth >= 4) * (device != 0))                   # deep pages tire small screens
             - 0.02 * page_depth)
    p_true = 1 / (1 + np.exp(-logit))
    clicks = (rng.random(n) < p_true).astype(np.int64)

    categorical = np.stack([publisher, ad_slot, creative, device, os_, region, hour, weekday], axis=1).astype(np.int64)
    numeric = np.stack([log_bid_floor, log_recency_h, frequency, page_depth, viewability], axis=1).astype(np.float32)
    fr = P["split_fractions"]
    n_train, n_val = int(fr["train"] * n), int(fr["validation"] * n)
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    arrays: dict[str, np.ndarray] = {}
    for split, (a, b) in bounds.items():
        arrays[f"{split}/categorical"] = categorical[a:b]
        arrays[f"{split}/numeric"] = numeric[a:b]
        arrays[f"{split}/labels"] = clicks[a:b]
        arrays[f"{split}/p_true"] = p_true[a:b].astype(np.float32)
    cardinalities = [n_pub, n_pub * spp, n_cre, 4, P["oses"], P["regions"], 24, 7]
    meta = {"params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in P.items()} | {"n": n},
            "categorical_fields": list(CATEGORICAL), "numeric_fields": list(NUMERIC),
            "cardinalities": cardinalities, "devices": list(DEVICES), "click_rate": float(clicks.mean())}
    return arrays, meta
