"""Command line for tinyroots.data.

    python -m tinyroots.data clean INPUT... -o OUTDIR [--workers N] [--keep-rejected [N]]
                                            [--config clean.toml] [--min-words 50 ...]
    python -m tinyroots.data tokenize INPUT... -o OUTDIR (--vocab-size N | --tokenizer DIR)
    python -m tinyroots.data prepare INPUT... --cache-dir DIR [--vocab-size N] [clean options]
    python -m tinyroots.data info SHARD_OR_DIR...

Every CleanConfig field is also an option (min_words -> --min-words); booleans take
--pii / --no-pii. A config file is read first and options override it. The language options:
--languages en,zh,fr (or any, the default) keeps the languages lid.176 identifies with
confidence >= --min-language-score (0.8); each is filtered with its own row of languages.py.
"""

import argparse
import dataclasses
import json
import os
import sys

from ..config import CommandParser
from .config import CleanConfig, ConfigError, config_fields, parse_value
from .langid import LanguageIdError
from .parallel import MAX_WORKERS


def _add_clean_options(parser):
    parser.add_argument("--config", default=None, help="TOML or JSON file with CleanConfig keys, "
                        "read before the options below (default: none)")
    group = parser.add_argument_group("cleaning thresholds (CleanConfig fields)")
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        # subtle: argparse %-formats help strings; a literal "%" must be doubled
        default = "the language's, see languages.py" if f.default is None else repr(f.default)
        help_text = f"{f.metadata['help']} (default: {default})".replace("%", "%%")
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar="VALUE",
                               help=help_text)


def _config_from_args(args):
    cfg = CleanConfig.from_file(args.config) if args.config else CleanConfig()
    fields = {f.name: f for f in config_fields()}
    changes = {}
    for name, f in fields.items():
        if hasattr(args, name):
            value = getattr(args, name)
            changes[name] = value if isinstance(value, bool) else parse_value(f, value)
    return cfg.replace(**changes) if changes else cfg


def _int_at_least(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected an integer <= {high}, got {value}")
        return value
    return parse


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _common(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="files, directories (recursive) or globs: .txt, .jsonl, .jsonl.gz")
    parser.add_argument("--workers", type=_int_at_least(1, MAX_WORKERS), default=1,
                        help=f"processes, at most {MAX_WORKERS} (default: 1)")


def build_parser():
    parser = CommandParser(prog="python -m tinyroots.data",
                           description="Collect, clean, tokenize and shard text.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clean", help="write OUTDIR/clean.jsonl and OUTDIR/report.json")
    _common(p)
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR")
    p.add_argument("--keep-rejected", type=_int_at_least(0), nargs="?", const=100, default=0,
                   metavar="N", help="write up to N dropped documents per reason to "
                   "OUTDIR/rejected/, PII redacted (default: none; N alone: 100)")
    _add_clean_options(p)

    p = sub.add_parser("tokenize", help="tokenize (already clean) text into shards")
    _common(p)
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                   help="output directory for the tokenizer and the shards")
    _add_tokenize_options(p)
    p.add_argument("--text-field", default="text",
                   help="JSONL field with the text (default: 'text')")

    p = sub.add_parser("prepare", help="clean + train tokenizer + tokenize + shards, cached")
    _common(p)
    p.add_argument("--cache-dir", required=True,
                   help="where prepared data is kept, one folder per inputs-and-settings key")
    _add_tokenize_options(p)
    p.add_argument("--no-clean", action="store_true",
                   help="skip cleaning (default: clean)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when cached (default: reuse the cache)")
    _add_clean_options(p)

    p = sub.add_parser("info", help="print the header of token shards")
    p.add_argument("shards", nargs="+", help="shard files or directories")
    return parser


def _add_tokenize_options(p):
    # the same defaults as `python -m tinyroots.train --data` (pipeline.py holds them)
    from .pipeline import SHARD_TOKENS, VAL_FRACTION, VOCAB_SIZE
    p.add_argument("--vocab-size", type=_int_at_least(257), default=VOCAB_SIZE,
                   help="BPE vocabulary to train; a small corpus may give fewer, and the "
                        f"output says why (default: {VOCAB_SIZE})")
    p.add_argument("--tokenizer", default=None,
                   help="a saved tokenizer folder to use instead of training (default: train)")
    p.add_argument("--val-fraction", type=_fraction, default=VAL_FRACTION,
                   help="share of the tokens held out for validation; documents are split when "
                        f"needed (default: {VAL_FRACTION})")
    p.add_argument("--shard-tokens", type=_int_at_least(1), default=SHARD_TOKENS,
                   help=f"most tokens in one shard file (default: {SHARD_TOKENS:_})")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, FileNotFoundError, ValueError, LanguageIdError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _log(*a):
    print(*a, file=sys.stderr, flush=True)  # progress to stderr: stdout is for results


def _clean(args):
    from .cleaning import clean, format_report
    report = clean(args.inputs, args.out, _config_from_args(args), workers=args.workers,
                   keep_rejected=args.keep_rejected, log=_log)
    print(format_report(report))


def _tokenize(args):
    from .collect import check_file, iter_documents, resolve_inputs
    from .pipeline import tokenize_documents, train_tokenizer
    files = []
    for f in resolve_inputs(args.inputs):
        reason = check_file(f)
        if reason:
            _log(f"skipping {f}: {reason}")
        else:
            files.append(f)

    def texts():
        return (d.text for d in iter_documents(files, args.text_field))
    if args.tokenizer:
        from ..tokenizer import Tokenizer
        tok = Tokenizer.from_pretrained(args.tokenizer)
    else:
        tok = train_tokenizer(texts(), args.vocab_size, args.out, log=_log)
    tok.save_pretrained(os.path.join(args.out, "tokenizer"))
    train, val, n_train, n_val = tokenize_documents(
        texts(), tok, args.out, args.val_fraction, args.shard_tokens, args.workers, _log)
    print(json.dumps({"train": train, "val": val, "n_train_tokens": n_train,
                      "n_val_tokens": n_val, "tokenizer": os.path.join(args.out, "tokenizer")},
                     indent=2))


def _prepare(args):
    from .pipeline import prepare
    data = prepare(args.inputs, args.cache_dir, args.vocab_size,
                   config=_config_from_args(args), clean_text=not args.no_clean,
                   val_fraction=args.val_fraction, shard_tokens=args.shard_tokens,
                   tokenizer=args.tokenizer, workers=args.workers, force=args.force)
    summary = dataclasses.asdict(dataclasses.replace(data, tokenizer=None, report={}))
    summary.pop("report")
    summary.pop("tokenizer")
    summary["vocab_size_asked"] = None if args.tokenizer else args.vocab_size
    print(json.dumps(summary, indent=2, ensure_ascii=False))


def _info(args):
    from .shards import find_shards, read_header
    for item in args.shards:
        for path in find_shards(item):
            n, dtype, vocab = read_header(path)
            print(f"{path}: {n} tokens, {dtype.name}, vocab_size {vocab}")


COMMANDS = {"clean": _clean, "tokenize": _tokenize, "prepare": _prepare, "info": _info}


def _run(args):
    COMMANDS[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
