"""intents: synthetic ad copy labelled with its campaign intent (8 classes).

Each ad is one "core" sentence of its class (templates with slot fillers). Most ads (v2:
70%) also carry a *second live offer* of another class, and end with a cancellation that
names the cancelled offer only by its place ("update: the first offer has ended", "the
latter deal is sold out"): the intent is the offer that is *not* cancelled, which takes
composing the whole ad (which offer comes first, what the cancellation refers to). A
bag-of-words model sees both offers and cannot tell; a model that reads order can, and a
4-layer BERT learns it within the zoo's budget where a 2-layer one mostly does not. The
other ads carry *negated distractors* instead: another class's core phrase after a cue ("no
need to", "forget", "instead of" ...), often from a near-miss class ("book a demo" / "book
your seats" / "book your flight"). Class-neutral filler, a legal footer of up to a few
hundred words on some ads (the long tail of lengths), typos, casing noise and 2% label
noise keep the task good-but-not-perfect. A WordPiece tokenizer is trained on the train split.
"""
from __future__ import annotations

import random

import numpy as np

VERSION = 2
CLASSES = ("app_install", "lead_generation", "retail_sale", "travel_booking",
           "financial_offer", "job_recruitment", "event_promotion", "brand_awareness")
# Fixed before any model was tuned on it (see datasets/README.md).
PARAMS = {
    "n": {"train": 16_000, "validation": 2_000, "test": 4_000},
    "distractor_probs": (0.4, 0.45, 0.15),  # 0, 1 or 2 negated distractors
    "near_miss_prob": 0.6,  # a distractor comes from the near-miss class
    "filler_max": 2, "footer_prob": 0.12, "footer_mean_sentences": 6,
    "typo_rate": 0.04, "upper_prob": 0.08, "label_noise": 0.02,
    "vocab_size": 4000, "max_length": 128,
    "cancel_prob": 0.7,  # two live offers, one cancelled later by its place ("the first offer has ended")
}
NEAR_MISS = {0: 2, 1: 6, 2: 3, 3: 2, 4: 1, 5: 4, 6: 1, 7: 2}
SLOTS = {
    "brand": ["acme", "nova", "zenith", "bluebird", "orbit", "kestrel", "lumen", "pioneer", "harbor", "vertex"],
    "products": ["sneakers", "jackets", "laptops", "headphones", "sofas", "dresses", "watches", "toys", "phones"],
    "pct": ["10%", "15%", "20%", "25%", "30%", "40%", "50%", "2.9%", "4.5%", "0%"],
    "price": ["$9", "$19.99", "$49", "$99", "$250", "$1,000", "$5,000", "$25k"],
    "city": ["paris", "lisbon", "tokyo", "new york", "berlin", "rome", "bali", "cancun", "london", "denver"],
    "season": ["summer", "winter", "spring", "holiday", "black friday", "back to school"],
    "day": ["friday", "monday", "sunday", "june 3", "next week", "tomorrow"],
    "service": ["solar panels", "home insurance", "roof repair", "payroll software", "web design", "hvac"],
    "topic": ["cloud security", "marketing roi", "remote teams", "data privacy", "small business growth"],
    "role": ["nurse", "driver", "engineer", "cashier", "designer", "sales associate", "warehouse worker"],
    "event": ["the jazz festival", "techconf", "the marathon", "comic expo", "the food fair", "the concert"],
    "feature": ["dark mode", "one tap checkout", "offline maps", "live tracking"],
    "slogan": ["built to last", "made for you", "simply better", "the future of comfort", "always there"],
    "year": ["1925", "1968", "1987", "2004", "2011"],
    "n": ["12", "40", "120", "300", "1,500"],
}
CORE = {
    0: [
        "download the {brand} app now",
        "get the {brand} app and earn rewards",
        "install {brand} on your phone today",
        "available on the app store and google play",
        "new in the {brand} app: {feature}. tap to install",
        "play free, download now",
        "install our app for {feature}",
    ],
    1: [
        "get a free quote for {service}",
        "download our free guide on {topic}",
        "book a free demo of {brand}",
        "request a callback from our {service} experts",
        "sign up for a free consultation about {service}",
        "get your free {topic} report",
        "talk to an advisor about {service}",
    ],
    2: [
        "{pct} off {products} this weekend only",
        "shop the {season} sale: {products} from {price}",
        "buy one get one free on all {products}",
        "free shipping on {products} orders over {price}",
        "clearance: {products} now {price}",
        "shop new {products} at {brand}",
    ],
    3: [
        "book your flight to {city} from {price}",
        "hotels in {city} {pct} off, book by {day}",
        "last minute trips to {city}",
        "plan your {season} getaway to {city}",
        "fly to {city} this {season}",
        "all inclusive resorts in {city} from {price}",
    ],
    4: [
        "apply for a credit card with {pct} apr",
        "get approved for a loan up to {price}",
        "{pct} cashback on your new {brand} card",
        "refinance your mortgage at {pct}",
        "open a savings account and earn {pct} interest",
        "personal loans from {price}, apply in minutes",
    ],
    5: [
        "we are hiring {role}s in {city}",
        "apply now for a {role} position at {brand}",
        "join our team as a {role}, pay from {price}",
        "careers at {brand}: {n} open roles",
        "now hiring: {role}, start {day}",
    ],
    6: [
        "tickets for {event} in {city} on sale {day}",
        "book your seats for {event}",
        "join us at {event}, {day} in {city}",
        "register for the {event} livestream",
        "{event} returns {day}, get tickets",
    ],
    7: [
        "{brand}: {slogan}",
        "discover the story behind {brand}",
        "{brand}, proudly independent since {year}",
        "see why millions choose {brand}",
        "{brand}. {slogan}.",
        "meet the people who make {brand}",
    ],
}
CUES = ["no need to", "forget", "skip", "not", "no", "without", "instead of", "unlike", "you don't have to",
        "never mind"]
FILLER = ["limited time only", "terms apply", "click to learn more", "trusted by {n} customers", "visit {brand}.com",
          "hurry!", "don't miss out", "see details", "new", "only at {brand}", "rated 4.8 stars", "while supplies last",
          "no purchase necessary to view", "sponsored"]
LEGAL = [
    "offer valid while supplies last and subject to availability",
    "terms and conditions apply see site for details",
    "prices exclude taxes and fees unless otherwise stated",
    "void where prohibited by law",
    "not combinable with other promotions",
    "eligibility requirements may apply to all participants",
    "the advertiser reserves the right to modify or cancel this promotion at any time",
    "images are for illustration purposes only",
    "your data is processed according to our privacy policy",
    "results may vary and past performance is not indicative of future results",
    "limit one per customer household or account",
    "standard message and data rates may apply",
]


def _fill(template: str, rnd: random.Random) -> str:
    out = template
    for key, values in SLOTS.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rnd.choice(values), 1)
    return out


def _typo(word: str, rnd: random.Random) -> str:
    i = rnd.randrange(len(word) - 1)
    kind = rnd.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


# A cancellation names the cancelled offer by its place among the ad's two offers, never by its words.
ORDINALS = (("first", "earlier", "former", "1st"), ("second", "later", "latter", "2nd"))
CANCELS = ["update: the {ord} offer has ended", "sorry, the {ord} deal is sold out",
           "the {ord} offer is no longer available", "correction: the {ord} promotion was cancelled",
           "please note the {ord} offer has expired", "the {ord} one is gone, sorry"]


def _ad(label: int, rnd: random.Random) -> str:
    P = PARAMS
    own = _fill(rnd.choice(CORE[label]), rnd)
    parts, cancelled = [own], None
    if rnd.random() < P["cancel_prob"]:  # two live offers; the one of another class is cancelled at the end
        cancelled = _fill(rnd.choice(CORE[rnd.choice([c for c in CORE if c != label])]), rnd)
        parts.append(cancelled)
    else:
        for _ in range(rnd.choices((0, 1, 2), weights=P["distractor_probs"])[0]):
            near = rnd.random() < P["near_miss_prob"]
            other = NEAR_MISS[label] if near else rnd.choice([c for c in CORE if c != label])
            parts.append(rnd.choice(CUES) + " " + _fill(rnd.choice(CORE[other]), rnd))
    parts += [_fill(rnd.choice(FILLER), rnd) for _ in range(rnd.randint(0, P["filler_max"]))]
    rnd.shuffle(parts)
    if cancelled is not None:
        place = rnd.choice(ORDINALS[int(parts.index(cancelled) > parts.index(own))])
        parts.append(rnd.choice(CANCELS).replace("{ord}", place))
    text = ". ".join(parts)
    if rnd.random() < P["footer_prob"]:
        n_legal = 1 + int(rnd.expovariate(1 / P["footer_mean_sentences"]))
        text += ". " + ". ".join(rnd.choice(LEGAL) for _ in range(n_legal))
    words = [(_typo(w, rnd) if len(w) >= 4 and rnd.random() < P["typo_rate"] else w) for w in text.split(" ")]
    text = " ".join(words)
    return text.upper() if rnd.random() < P["upper_prob"] else text


def generate(seed: int = 0, n: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Texts and labels keyed "split/texts", "split/labels"; JSON-able meta."""
    rnd = random.Random(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, size in (n or PARAMS["n"]).items():
        labels = [rnd.randrange(len(CLASSES)) for _ in range(size)]
        texts = [_ad(y, rnd) for y in labels]
        labels = [rnd.randrange(len(CLASSES)) if rnd.random() < PARAMS["label_noise"] else y for y in labels]
        arrays[f"{split}/texts"] = np.array(texts, dtype=object)
        arrays[f"{split}/labels"] = np.array(labels, dtype=np.int64)
    return arrays, {"params": PARAMS, "classes": list(CLASSES)}


def train_tokenizer(texts, path, vocab_size: int | None = None, min_frequency: int = 2) -> None:
    """Learn a WordPiece vocabulary on `texts` and save a BERT-style `tokenizers` tokenizer at `path`.

    The vocabulary is learned deterministically (the library's WordPieceTrainer breaks count
    ties in hash order, so two runs differ): the library's own normalizer and pre-tokenizer
    split words; then the alphabet, frequent whole words and frequent word pieces
    (prefixes and ##suffixes) are taken by count, ties broken alphabetically.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab_size = vocab_size or PARAMS["vocab_size"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(str(text))))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for w in words for c in w})
    vocab = specials + chars + ["##" + c for c in chars]
    frequent = sorted((w for w, c in words.items() if c >= min_frequency and len(w) > 1), key=lambda w: (-words[w], w))
    pieces: Counter = Counter()
    for w, c in words.items():
        for i in range(2, len(w)):
            pieces[w[:i]] += c
            pieces["##" + w[len(w) - i:]] += c
    seen = set(vocab)
    for token in frequent + sorted((p for p, c in pieces.items() if c >= min_frequency), key=lambda p: (-pieces[p], p)):
        if len(vocab) >= vocab_size:
            break
        if token not in seen:
            vocab.append(token)
            seen.add(token)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    tok.decoder = decoders.WordPiece()
    tok.save(str(path))


def encode(tokenizer_path, texts, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask, int64 (N, max_length), padded with [PAD]=0, tail truncated."""
    from tokenizers import Tokenizer

    max_length = max_length or PARAMS["max_length"]
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    encs = tok.encode_batch([str(t) for t in texts])
    ids = np.array([e.ids for e in encs], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
    return ids, mask
