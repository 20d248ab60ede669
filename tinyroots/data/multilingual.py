"""A planted multilingual corpus: clean paragraphs in eight languages and writings, with known
duplicates, near duplicates, PII, junk and documents in the wrong language.

    docs, truth = make_multilingual_corpus()
    docs["fr"]          # the documents of the French file (a list of {"id", "text"})
    truth["fr"]["near_dup"], truth["fr"]["language"], ...   # ids planted for each step

For each language L (en, zh-Hans, zh-Hant, fr, es, de, ar, hi) the pool has 12 sentences,
written for tinyroots: sentences 0-7 make four clean documents of two sentences; 8-9 a document
with an e-mail address and a phone number written the local way; 10-11 a document that is
planted in the next language's file (ORDER), where it is mislabelled. Then one exact and one near
copy, and two junk documents (a sentence repeated, a table of numbers and symbols).

The clean sentences carry the numbers ordinary text has (years, times, prices, versions,
thousands separators), which PII redaction must leave alone. The sentences live in
samples/sentences.txt.
"""

import os

SENTENCES = os.path.join(os.path.dirname(__file__), "samples", "sentences.txt")


def read_pools(path=SENTENCES):
    """({language: [12 sentences]}, {language: its PII sentence}) from sentences.txt."""
    pools, pii, name = {}, {}, None
    with open(path, encoding="utf-8") as f:
        for line in (raw.strip() for raw in f):
            if line.startswith("## "):
                name = line[3:]
                pools[name] = []
            elif line.startswith("pii: "):
                pii[name] = line[5:]
            elif line and not line.startswith("#"):
                pools[name].append(line)
    return pools, pii


POOLS, PII_SENTENCES = read_pools()

# lid.176's label for each pool (Chinese is one label for both writings)
LID_CODE = {"zh-Hans": "zh", "zh-Hant": "zh"}

NEAR_SUFFIX = {"en": " Thanks.", "zh-Hans": "谢谢。", "zh-Hant": "謝謝。", "fr": " Merci.",
               "es": " Gracias.", "de": " Danke.", "ar": " شكرا.", "hi": " धन्यवाद।"}
JOIN = {"zh-Hans": "", "zh-Hant": ""}  # no space between Chinese sentences

STEPS = ("exact_dup", "near_dup", "language", "filters", "pii", "kept")
# the file order: each file's mislabelled document comes from the next language, never from
# the other Chinese writing (lid.176 gives both the same label, rightly)
ORDER = ("en", "zh-Hans", "fr", "zh-Hant", "es", "de", "ar", "hi")


def lid_code(name):
    return LID_CODE.get(name, name)


def _junk(name, pool):
    """Two junk documents in the language: one sentence repeated, and a table of numbers and
    symbols with a few of the language's words."""
    repeated = JOIN.get(name, " ").join([pool[0]] * 12)
    words = pool[1].split() if name not in JOIN else list(pool[1][:12])
    table = "\n".join(f"| {w} | {1000 + 37 * i} | {i * 3.25:.2f} | #{i:03d} | -- | *** |"
                      for i, w in enumerate(words))
    return repeated, table


def make_multilingual_corpus():
    """({language: [documents]}, {language: {step: [ids]}}); steps are STEPS, where 'language'
    is the mislabelled document, 'filters' the junk documents (dropped by a quality filter or
    as uncertain_language: text no language model can name) and 'kept' the clean ones."""
    names = list(ORDER)
    docs, truth = {}, {}
    for k, name in enumerate(names):
        pool, join = POOLS[name], JOIN.get(name, " ")
        base = [join.join(pool[i:i + 2]) for i in range(0, 8, 2)]
        nxt = names[(k + 1) % len(names)]
        foreign = JOIN.get(nxt, " ").join(POOLS[nxt][10:12])
        pii = join.join(pool[8:10] + [PII_SENTENCES[name]])
        items = [(f"{name}-clean-{i}", "kept", t) for i, t in enumerate(base)]
        items += [(f"{name}-pii", "pii", pii),
                  (f"{name}-exact", "exact_dup", base[0]),
                  (f"{name}-near", "near_dup", base[1] + NEAR_SUFFIX[name]),
                  (f"{name}-foreign-{nxt}", "language", foreign)]
        items += [(f"{name}-junk-{i}", "filters", t) for i, t in enumerate(_junk(name, pool))]
        docs[name] = [{"id": i, "text": t} for i, _, t in items]
        truth[name] = {step: [i for i, s, _ in items if s == step] for step in STEPS}
    return docs, truth


def bench_documents(n_docs, seed=0, sentences=(6, 12)):
    """n_docs documents for throughput measurements: each in one language of POOLS (drawn
    in turn), of 6-12 sentences drawn at random from its pool, so documents differ."""
    import numpy as np
    rng = np.random.default_rng(seed)
    names = list(ORDER)
    docs = []
    for i in range(n_docs):
        name = names[i % len(names)]
        pool = POOLS[name]
        picks = rng.choice(len(pool), size=int(rng.integers(*sentences)), replace=True)
        docs.append({"id": f"{name}-{i}", "text": JOIN.get(name, " ").join(pool[j] for j in picks)})
    return docs
