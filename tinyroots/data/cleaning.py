"""Clean a corpus, ROOTS-style: normalise, deduplicate, strip boilerplate, filter, redact.

    clean(["corpus/", "extra.jsonl.gz"], "out/")  ->  out/clean.jsonl, out/report.json

The corpus is read twice, streaming, so it never has to fit in memory:

    pass 1 (scan)   normalise -> exact hash, MinHash, line hashes       (workers)
                    first copy wins: exact and near duplicates marked;  (main process,
                    lines of the kept documents counted in a sketch      corpus order)
    pass 2 (clean)  normalise -> drop boilerplate lines -> language id  (workers)
                    -> that language's filters -> PII redaction
                    -> clean.jsonl, counts per step and per language     (main, in order)

Each step of a document is a pure function below (scan_document, remove_lines,
identify_language, language_reason, clean_document); the passes (scan_pass, clean_pass) only
move documents between processes and keep counts. Because every decision that needs earlier
documents is made in the main process in corpus order, the output is the same for any number of
workers.
"""

import json
import os
import random
import time
import zlib

import numpy as np

from ._native import fast as _fast
from .collect import check_file, iter_documents, resolve_inputs
from .config import CleanConfig
from .dedup import HashIndex, LineSketch, MinHasher, NearDuplicates
from .filters import FILTER_REASONS, rejection_reason
from .hashing import hash64
from .languages import resolve
from .normalize import WORD_SPLITTERS, normalize_text, spaced_cjk
from .parallel import MAX_WORKERS, ordered_map
from .pii import redact_pii
from .wordlists import load_word_list

KEEP, EXACT_DUP, NEAR_DUP = 0, 1, 2
CHUNK_DOCS = 256  # documents per task sent to a worker...
CHUNK_CHARS = 1 << 20  # ...or fewer, when they add up to this many characters


# --------------------------------------------------------------------------------------------
# one document

def normalize(text, cfg):
    """normalize_text with the switches from cfg."""
    return normalize_text(text, cfg.nfc, cfg.strip_control, cfg.collapse_whitespace)


def line_key(line):
    """A 64-bit key for a (stripped) line: its UTF-8 length above its CRC-32.

    Two different lines share a key only if they have the same length and the same CRC (about
    1 in 4 billion). CRC-32 is much cheaper than a cryptographic hash, which matters here: every
    line of the corpus is hashed twice.

    >>> line_key("abc") >> 32, line_key("abc") & 0xFFFFFFFF == zlib.crc32(b"abc")
    (3, True)
    """
    data = line.encode("utf-8", "surrogatepass")
    return (len(data) << 32) | zlib.crc32(data)


def line_keys_py(text, min_chars):
    """For each line of text, line_key of the stripped line, or 0 if shorter than min_chars.

    >>> line_keys_py("a long enough line here\\nshort", 10).tolist() == [
    ...     line_key("a long enough line here"), 0]
    True
    """
    keys = [line_key(s) if len(s) >= min_chars else 0
            for s in (line.strip() for line in text.split("\n"))]
    return np.array(keys, np.uint64)


def line_keys(text, min_chars):
    """line_keys_py, in Cython when it was built (same keys)."""
    if _fast is not None:
        return _fast.line_keys(text, min_chars)
    return line_keys_py(text, min_chars)


def line_hashes(text, min_chars):
    """Sorted keys of the distinct lines of text at least min_chars long (stripped).

    A line counts once per document: boilerplate is about how many documents repeat it.

    >>> len(line_hashes("Subscribe to our newsletter!\\nhi\\nSubscribe to our newsletter!", 20))
    1
    """
    keys = line_keys(text, min_chars)
    return np.unique(keys[keys != 0])


def remove_lines(text, boilerplate, min_chars):
    """Drop the lines whose key is in the boilerplate set; returns (text, lines removed).

    >>> bp = {line_key("Subscribe to our newsletter!")}
    >>> remove_lines("Dear reader,\\nSubscribe to our newsletter!\\nBye", bp, 20)
    ('Dear reader,\\nBye', 1)
    """
    if not boilerplate:
        return text, 0
    keys = line_keys(text, min_chars).tolist()
    if boilerplate.isdisjoint(keys):  # the common case: nothing to remove
        return text, 0
    kept = [line for line, key in zip(text.split("\n"), keys) if key not in boilerplate]
    # subtle: removing a line can leave three newlines in a row; normalise them again.
    return normalize_text("\n".join(kept), nfc=False, control=False), len(keys) - len(kept)


def scan_document(text, cfg, hasher=None):
    """Pass 1 for one document: what deduplication and the line counts need.

    Returns (raw UTF-8 bytes, normalised bytes, exact key, MinHash signature, band keys,
    line hashes); hasher is a MinHasher (None when near dedup is off). The signature and the
    line hashes come as raw bytes (uint32 and uint64, little-endian): they cross a process
    boundary, and pickling bytes costs far less than pickling small NumPy arrays.
    """
    norm = normalize(text, cfg)
    sig, keys = hasher(spaced_cjk(norm)) if hasher is not None else (None, [])
    lines = line_hashes(norm, cfg.boilerplate_min_chars) if cfg.boilerplate else None
    raw_bytes = len(text.encode("utf-8", "surrogatepass"))
    data = norm.encode("utf-8")
    sig = None if sig is None else sig.astype("<u4").tobytes()
    lines = None if lines is None else lines.astype("<u8").tobytes()
    return raw_bytes, len(data), hash64(data), sig, keys, lines


def identify_language(text, cfg):
    """(language, confidence) of a document: lid.176's answer, or with language_id off the first
    of cfg.languages at confidence 1 ('und', undetermined, for 'any': the language-agnostic
    filters)."""
    if cfg.language_id:
        from .langid import identify
        return identify(text)
    first = cfg.languages[0]
    return ("und" if first == "any" else first), 1.0


def language_reason(lang, score, cfg):
    """None when a document in `lang`, identified with `score`, stays; else why it goes:
    'uncertain_language' below the confidence ROOTS asked for (junk, or text mixing several
    languages), 'language' for a language not in cfg.languages.

    >>> from tinyroots.data.config import CleanConfig
    >>> cfg = CleanConfig(languages=("en", "zh"))
    >>> [language_reason(*x, cfg) for x in [("zh", 0.93), ("fr", 0.99), ("en", 0.55)]]
    [None, 'language', 'uncertain_language']
    """
    if not cfg.language_id:
        return None
    if score < cfg.min_language_score:
        return "uncertain_language"
    if cfg.languages != ("any",) and lang not in cfg.languages:
        return "language"
    return None


def clean_document(text, cfg, boilerplate=frozenset(), word_lists=(None, None)):
    """Pass 2 for one document: normalise, drop boilerplate lines, identify the language,
    apply that language's filters, redact.

    word_lists: (stopwords, flagged words) from the user's files, or None for the language's
    own lists. Returns a dict: reason (None when kept), text (the cleaned text, or the text the
    filter saw), lang and lang_score, params (the table row used), bytes before/after each
    step, lines removed and PII counts.

    >>> out = clean_document("Too short.", CleanConfig(language_id=False, languages=("en",)))
    >>> out["reason"], out["text"], out["params"]
    ('too_few_words', 'Too short.', 'en')
    """
    norm = normalize(text, cfg)
    body, n_lines = remove_lines(norm, boilerplate, cfg.boilerplate_min_chars)
    lang, score = identify_language(body, cfg)
    params = resolve(lang, cfg, *word_lists)
    out = {"reason": None, "text": body, "lang": lang, "lang_score": score,
           "params": params.code, "norm_bytes": len(norm.encode("utf-8")),
           "lines_removed": n_lines, "pii": {}}
    out["body_bytes"] = len(body.encode("utf-8")) if n_lines else out["norm_bytes"]
    out["reason"] = language_reason(lang, score, cfg)
    if out["reason"] is None:
        words = WORD_SPLITTERS[params.words](body)
        out["reason"] = rejection_reason(body, words, params, cfg.scripts, cfg.min_script_ratio)
    if out["reason"] is None and cfg.pii:
        out["text"], out["pii"] = redact_pii(body, cfg.pii_kinds)
    out["out_bytes"] = len(out["text"].encode("utf-8")) if out["pii"] else out["body_bytes"]
    return out


# --------------------------------------------------------------------------------------------
# worker side: state set once per process, then whole chunks of documents

_worker = {}


def _init_worker(cfg, boilerplate=frozenset(), word_lists=(None, None)):
    _worker.clear()
    _worker.update(cfg=cfg, boilerplate=boilerplate, word_lists=word_lists)
    _worker["hasher"] = (MinHasher(cfg.near_dup_threshold, cfg.minhash_perms, cfg.shingle_words,
                                   cfg.seed) if cfg.near_dedup else None)


def _scan_chunk(texts):
    return [scan_document(t, _worker["cfg"], _worker["hasher"]) for t in texts]


def _clean_chunk(docs):
    """clean_document for each (text, source, id), or None; a kept document comes back as its
    finished clean.jsonl line (JSON is encoded here, in parallel, not in the main process)."""
    w, results = _worker, []
    for doc in docs:
        if doc is None:
            results.append(None)
            continue
        text, source, doc_id = doc
        res = clean_document(text, w["cfg"], w["boilerplate"], w["word_lists"])
        if res["reason"] is None:
            record = {"text": res.pop("text"), "source": source, "id": doc_id}
            res["line"] = json.dumps(record, ensure_ascii=False) + "\n"
        results.append(res)
    return results


def _chunks(docs, payload=lambda i, doc: doc.text):
    """Group documents into chunks of CHUNK_DOCS / CHUNK_CHARS for ordered_map: each chunk is
    ([(index, document)], [payload(index, document)])."""
    batch, size = [], 0
    for i, doc in enumerate(docs):
        batch.append((i, doc))
        size += len(doc.text)
        if len(batch) >= CHUNK_DOCS or size >= CHUNK_CHARS:
            yield batch, [payload(j, d) for j, d in batch]
            batch, size = [], 0
    if batch:
        yield batch, [payload(j, d) for j, d in batch]


# --------------------------------------------------------------------------------------------
# the report

STEPS = ("normalise", "exact_dup", "near_dup", "boilerplate", "uncertain_language",
         "language") + FILTER_REASONS + ("pii",)


class _Reservoir:
    """A uniform random sample of at most k items from a stream (reservoir sampling)."""

    def __init__(self, k, seed):
        self.k, self.seen, self.items = k, 0, []
        self.rng = random.Random(seed)

    def offer(self, item_fn):
        self.seen += 1
        if len(self.items) < self.k:
            self.items.append(item_fn())
        else:
            j = self.rng.randrange(self.seen)  # keep the new item with probability k / seen
            if j < self.k:
                self.items[j] = item_fn()


def new_report(cfg, inputs, files, skipped, workers):
    """The report dict before any document is read: every step and count at zero."""
    steps = {s: {"docs": 0, "bytes": 0} for s in STEPS}
    steps["boilerplate"]["lines"] = 0
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    return {"config": cfg.to_dict(), "inputs": [os.fspath(i) for i in inputs],
            "files": len(files), "skipped_files": skipped, "problems": [], "steps": steps,
            "pii": {}, "languages": {}, "docs_in": 0, "bytes_in": 0, "docs_out": 0,
            "bytes_out": 0, "workers": workers}


def _step_rows(report):
    rows = [("input", report["docs_in"], report["bytes_in"], "")]
    for step in STEPS:
        s = report["steps"][step]
        note = ""
        if step == "boilerplate":
            note = f"{s['lines']} lines"
        elif step == "pii":
            note = ", ".join(f"{k} {v}" for k, v in sorted(report["pii"].items()))
        if s["docs"] or s["bytes"] or note:
            rows.append((f"- {step}", -s["docs"] if s["docs"] else "", -s["bytes"], note))
    rows.append(("output", report["docs_out"], report["bytes_out"], ""))
    lines = [f"{'step':<22}{'documents':>12}{'bytes':>16}  note", "-" * 60]
    for name, docs, nbytes, note in rows:
        lines.append(f"{name:<22}{docs:>12}{nbytes:>16}  {note}".rstrip())
    return lines


def _language_rows(report, top=20):
    """Documents per language (after deduplication), kept, and whose filters were used."""
    langs = sorted(report["languages"].items(), key=lambda kv: (-kv[1]["docs"], kv[0]))
    if not langs:
        return []
    lines = ["", f"{'language':<12}{'documents':>10}{'kept':>10}{'bytes out':>14}  filters",
             "-" * 60]
    for code, c in langs[:top]:
        note = c["params"] if c["params"] != "default" else \
            "default (no row in languages.py: language-agnostic filters)"
        if c["dropped_by_language"] == c["docs"]:
            note = "- (not kept: another language, or under the confidence asked)"
        lines.append(f"{code:<12}{c['docs']:>10}{c['docs_out']:>10}{c['bytes_out']:>14}  {note}")
    if len(langs) > top:
        rest = langs[top:]
        lines.append(f"... {len(rest)} more languages, {sum(c['docs'] for _, c in rest)} "
                     "documents (report.json lists them all)")
    return lines


def format_report(report):
    """The report as text: documents and bytes in, removed by each step, out; then documents
    per language and the filters each language was cleaned with."""
    lines = _step_rows(report) + _language_rows(report)
    for item in report["skipped_files"]:
        lines.append(f"skipped {item['path']}: {item['reason']}")
    if report["problems"]:
        lines.append(f"{len(report['problems'])} malformed records skipped "
                     f"(first: {report['problems'][0]})")
    mb = report["bytes_in"] / 1e6
    lines.append(f"{mb:.1f} MB in {report['seconds']:.1f} s "
                 f"({mb / max(report['seconds'], 1e-9):.2f} MB/s, {report['workers']} workers)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# setting up a run

def load_word_lists(cfg):
    """(stopwords, flagged words) from cfg's files as frozensets, or None for each list the
    language table provides."""
    stopwords = load_word_list(cfg.stopwords_file) if cfg.stopwords_file else None
    flagged = load_word_list(cfg.flagged_words_file) if cfg.flagged_words_file else None
    return stopwords, flagged


def check_run_args(out_dir, workers, keep_rejected):
    """Refuse arguments that cannot work before any file is read: one clear ValueError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    if workers > MAX_WORKERS:
        raise ValueError(f"workers: expected at most {MAX_WORKERS} (4 per CPU core), got "
                         f"{workers}")
    if isinstance(keep_rejected, bool) or not isinstance(keep_rejected, int) \
            or keep_rejected < 0:
        raise ValueError(f"keep_rejected: expected an integer >= 0 (documents per reason), "
                         f"got {keep_rejected!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output {os.fspath(out_dir)!r} is an existing file; expected a "
                         "directory (new or existing) for clean.jsonl and report.json")


def _usable_files(inputs, log):
    files, skipped = [], []
    for path in resolve_inputs(inputs):
        reason = check_file(path)
        if reason:
            skipped.append({"path": path, "reason": reason})
            log(f"skipping {path}: {reason}")
        else:
            files.append(path)
    return files, skipped


# --------------------------------------------------------------------------------------------
# pass 1: mark duplicates, count lines

def _dedup_decision(key, sig, keys, cfg, exact, near, n):
    """KEEP, EXACT_DUP or NEAR_DUP for document number n; the first copy wins."""
    if cfg.exact_dedup and exact.setdefault(key, n) != n:
        return EXACT_DUP
    if near is not None and near.add(sig, keys):
        return NEAR_DUP
    return KEEP


def _mark_boilerplate(kept_lines, sketch, cfg, boilerplate):
    """Add a chunk's line hashes to the sketch; the lines whose count reaches the threshold
    are boilerplate. Counts only grow, so checking each chunk after adding it finds them all."""
    if kept_lines:
        hashes = np.frombuffer(b"".join(kept_lines), "<u8")
        sketch.add(hashes)
        boilerplate.update(hashes[sketch.estimate(hashes) >= cfg.boilerplate_min_docs].tolist())


def scan_pass(read, cfg, report, out_dir, workers):
    """Pass 1: returns (decisions, boilerplate): one byte per document (KEEP, EXACT_DUP or
    NEAR_DUP) and the set of boilerplate line keys."""
    steps, decisions, boilerplate = report["steps"], bytearray(), set()
    exact = HashIndex()
    near = (NearDuplicates(cfg.near_dup_threshold, cfg.minhash_perms, directory=out_dir)
            if cfg.near_dedup else None)
    sketch = LineSketch(cfg.boilerplate_sketch_width, seed=cfg.seed) if cfg.boilerplate else None
    try:
        for _docs, scans in ordered_map(_scan_chunk, _chunks(read()), workers, _init_worker,
                                        (cfg,)):
            kept_lines = []
            for raw_bytes, norm_bytes, key, sig, keys, lines in scans:
                report["docs_in"] += 1
                report["bytes_in"] += raw_bytes
                steps["normalise"]["bytes"] += raw_bytes - norm_bytes
                decision = _dedup_decision(key, sig, keys, cfg, exact, near, len(decisions))
                if decision == KEEP and lines is not None:
                    kept_lines.append(lines)
                elif decision != KEEP:
                    step = steps["exact_dup" if decision == EXACT_DUP else "near_dup"]
                    step["docs"] += 1
                    step["bytes"] += norm_bytes
                decisions.append(decision)
            _mark_boilerplate(kept_lines, sketch, cfg, boilerplate)
    finally:
        if near is not None:
            near.close()
    return decisions, boilerplate


# --------------------------------------------------------------------------------------------
# pass 2: clean, count, write

def _count_language(report, res):
    c = report["languages"].setdefault(res["lang"], {"docs": 0, "docs_out": 0, "bytes_out": 0,
                                                     "dropped_by_language": 0,
                                                     "params": res["params"]})
    c["docs"] += 1
    if res["reason"] in ("language", "uncertain_language"):
        c["dropped_by_language"] += 1
    elif res["reason"] is None:
        c["docs_out"] += 1
        c["bytes_out"] += res["out_bytes"]


def _count_result(report, res):
    """Add one cleaned document's result to the report; True when it is kept."""
    steps = report["steps"]
    steps["boilerplate"]["lines"] += res["lines_removed"]
    steps["boilerplate"]["bytes"] += res["norm_bytes"] - res["body_bytes"]
    _count_language(report, res)
    if res["reason"] is not None:
        steps[res["reason"]]["docs"] += 1
        steps[res["reason"]]["bytes"] += res["body_bytes"]
        return False
    steps["pii"]["bytes"] += res["body_bytes"] - res["out_bytes"]
    for tag, n in res["pii"].items():
        report["pii"][tag] = report["pii"].get(tag, 0) + n
    report["docs_out"] += 1
    report["bytes_out"] += res["out_bytes"]
    return True


class RejectedSamples:
    """Up to k dropped documents per reason, a uniform sample, PII redacted like the corpus:
    the personal data the cleaner removes must not land on disk beside it."""

    def __init__(self, k, cfg):
        self.k, self.cfg, self.samples = k, cfg, {}

    def offer(self, reason, doc, text):
        if not self.k:
            return
        if reason not in self.samples:
            self.samples[reason] = _Reservoir(self.k, self.cfg.seed + len(self.samples))
        self.samples[reason].offer(lambda: {"reason": reason, "source": doc.source,
                                            "id": doc.id, "text": self._redact(text)})

    def _redact(self, text):
        return redact_pii(text, self.cfg.pii_kinds)[0] if self.cfg.pii else text

    def write(self, out_dir):
        if not self.k:
            return
        rejected_dir = os.path.join(out_dir, "rejected")
        os.makedirs(rejected_dir, exist_ok=True)
        for reason, reservoir in sorted(self.samples.items()):
            with open(os.path.join(rejected_dir, f"{reason}.jsonl"), "w", encoding="utf-8") as f:
                for item in reservoir.items:
                    f.write(json.dumps(item, ensure_ascii=False) + "\n")


def clean_pass(read, cfg, report, decisions, init_args, rejected, out_path, workers):
    """Pass 2: clean every document pass 1 kept, write the kept ones to out_path (through a
    temporary file, so a crash never leaves a complete-looking clean.jsonl)."""
    def payload(i, doc):  # duplicates need no more work: send None in their place
        return (doc.text, doc.source, doc.id) if decisions[i] == KEEP else None

    tmp_path = out_path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as out:
        for docs, results in ordered_map(_clean_chunk, _chunks(read(), payload), workers,
                                         _init_worker, init_args):
            for (i, doc), res in zip(docs, results):
                if decisions[i] != KEEP:
                    reason = "exact_dup" if decisions[i] == EXACT_DUP else "near_dup"
                    rejected.offer(reason, doc, doc.text)
                elif _count_result(report, res):
                    out.write(res["line"])
                else:
                    rejected.offer(res["reason"], doc, res["text"])
    os.replace(tmp_path, out_path)


# --------------------------------------------------------------------------------------------
# the whole run

def clean(inputs, out_dir, config=None, workers=1, keep_rejected=0, log=None):
    """Clean inputs (files, directories, globs) into out_dir/clean.jsonl and report.json.

    config: a CleanConfig (default: CleanConfig()). workers: processes for the per-document
    work. keep_rejected: write up to this many dropped documents per reason to
    out_dir/rejected/<reason>.jsonl (a uniform sample, PII redacted). log: a print-like
    function for progress, or None. Returns the report dict (also in report.json).
    """
    cfg = config if config is not None else CleanConfig()
    log = log or (lambda *a, **k: None)
    start = time.perf_counter()
    check_run_args(out_dir, workers, keep_rejected)
    word_lists = load_word_lists(cfg)  # fail on a bad word-list path before any work
    if cfg.language_id:
        from .langid import identify
        identify("warm up")  # load the model once here: forked workers share it
    files, skipped = _usable_files(inputs, log)
    os.makedirs(out_dir, exist_ok=True)
    report = new_report(cfg, inputs, files, skipped, workers)

    def read():
        return iter_documents(files, cfg.text_field, cfg.id_field, cfg.txt_split,
                              cfg.max_doc_chars, report["problems"])

    log(f"pass 1/2: scanning {len(files)} files")
    decisions, boilerplate = scan_pass(read, cfg, report, out_dir, workers)
    report["boilerplate_line_hashes"] = len(boilerplate)
    log(f"pass 1/2: {report['docs_in']} documents, {report['steps']['exact_dup']['docs']} exact "
        f"and {report['steps']['near_dup']['docs']} near duplicates, {len(boilerplate)} "
        "boilerplate lines")

    log("pass 2/2: identifying languages and cleaning" if cfg.language_id
        else "pass 2/2: cleaning")
    report["problems"] = []  # pass 2 reads the same records again; count them once
    rejected = RejectedSamples(keep_rejected, cfg)
    clean_pass(read, cfg, report, decisions, (cfg, frozenset(boilerplate), word_lists),
               rejected, os.path.join(out_dir, "clean.jsonl"), workers)
    rejected.write(out_dir)
    _finish_report(report, out_dir, start)
    return report


def _finish_report(report, out_dir, start):
    # the languages whose documents went through the language-agnostic filters
    report["fallback_languages"] = sorted(
        code for code, c in report["languages"].items()
        if c["params"] == "default" and c["docs"] > c["dropped_by_language"])
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["mb_per_s"] = round(report["bytes_in"] / 1e6 / max(report["seconds"], 1e-9), 3)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
