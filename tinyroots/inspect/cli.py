"""`python -m tinyroots.inspect SUBCOMMAND --checkpoint DIR --text TEXT`

    next        the next-token distribution, and the formula P(x_t | x_<t) with its numbers
    attention   attention weights of every layer and head (--layer, --head: one heat map)
    lens        the logit lens: what each layer would predict
    attribute   which input tokens drove a prediction (--target; gradient x input and
                integrated gradients with --steps, baseline: zero token embeddings)
    embeddings  nearest tokens by cosine similarity (--token), and a 2-D PCA map (--tokens)
    surprise    per-token log-probability and perplexity; surprising tokens marked
    report      all of it in one self-contained HTML page (--out report.html)

Every subcommand prints a terminal view; --json prints the same data as one JSON object;
--out FILE.png draws it (needs matplotlib: pip install "tinyroots[plot]").
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from ..config import CommandParser
from . import analysis as A
from . import views

PROG = "python -m tinyroots.inspect"
COMMANDS = ("next", "attention", "lens", "attribute", "embeddings", "surprise", "report")


def build_parser():
    parser = CommandParser(prog=PROG, description=__doc__, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    for name in COMMANDS:
        p = sub.add_parser(name, allow_abbrev=False, help=_first_line(name))
        p.add_argument("--checkpoint", required=True,
                       help="run directory (its best/ or last/) or model directory")
        p.add_argument("--which", choices=("best", "last"), default="best",
                       help="in a run directory: best or last (default: best)")
        p.add_argument("--text", default=None, required=name != "embeddings",
                       help="the text to inspect")
        p.add_argument("--json", action="store_true", help="print the data as one JSON object")
        p.add_argument("--out", default=None,
                       help="write a picture (.png) or, for report, the page (.html)")
        p.add_argument("--num-threads", type=int, default=0, help="kernel threads; 0: default")
        if name in ("next", "report"):
            p.add_argument("--top-k", type=int, default=10, help="tokens shown (default 10)")
            p.add_argument("--temperature", type=float, default=1.0,
                           help="also show the distribution at this temperature")
        if name == "attention":
            p.add_argument("--layer", type=int, default=None, help="one layer (0-based)")
            p.add_argument("--head", type=int, default=None, help="one head (0-based)")
        if name in ("attribute", "report"):
            p.add_argument("--target", default=None,
                           help="the next token to explain (default: the model's top choice)")
            # the report's default is smaller: attribution is most of its time (each step is
            # a forward and backward pass), and the page shows the completeness error it gave
            steps = 8 if name == "report" else 20
            p.add_argument("--steps", type=int, default=steps,
                           help=f"integrated-gradients quadrature steps (default {steps})")
            p.add_argument("--score", choices=("logprob", "logit"), default="logprob",
                           help="what is attributed: the target's log-probability or logit")
        if name == "embeddings":
            p.add_argument("--token", required=True,
                           help="a token, as text (' the') or as in vocab.json ('Ġthe')")
            p.add_argument("--k", type=int, default=10, help="neighbours shown (default 10)")
            p.add_argument("--tokens", default="",
                           help="comma-separated tokens to add to the PCA map")
    return parser


def _first_line(name):
    for line in __doc__.splitlines():
        if line.strip().startswith(name + " "):
            return line.strip()[len(name):].strip()
    return ""


# ---------------------------------------------------------------------------------------------
# one function per subcommand: (args, model, tokenizer) -> (data for --json, terminal text)


def run_next(args, model, tok, ids):
    d = A.next_token(model, tok, ids, args.top_k, args.temperature)
    return d, views.show_next(d), lambda path: views.plot_next(d, path)


def run_attention(args, model, tok, ids):
    cfg = model.config
    A.check_index(args.layer, cfg.n_layer, "--layer", "layers")
    A.check_index(args.head, cfg.n_head, "--head", "heads per layer")
    w = A.attention(model, ids)                                        # (L, NH, T, T)
    tokens = [A.token_text(tok, i) for i in ids]
    layers = range(cfg.n_layer) if args.layer is None else [args.layer]
    heads = range(cfg.n_head) if args.head is None else [args.head]
    d = {"tokens": tokens, "layers": [
        {"layer": lay, "heads": [{"head": h, "weights": np.round(w[lay, h], 5).tolist()}
                                 for h in heads]} for lay in layers]}
    text = views.show_attention(w, tokens, args.layer, args.head)
    return d, text, lambda path: views.plot_attention(w, tokens, path, args.layer, args.head)


def run_lens(args, model, tok, ids):
    d = A.logit_lens(model, tok, ids)
    return d, views.show_lens(d), lambda path: views.plot_lens(d, path)


def _target(args, model, tok, ids, out=None):
    if args.target is not None:
        return A.resolve_token(tok, args.target, model.config.vocab_size, "--target")
    return A.next_token(model, tok, ids, top_k=1, out=out)["top"][0]["id"]


def run_attribute(args, model, tok, ids):
    d = A.attribute(model, tok, ids, _target(args, model, tok, ids), args.steps, args.score)
    return d, views.show_attribution(d), lambda path: views.plot_attribution(d, path)


def run_embeddings(args, model, tok, ids):
    V = model.config.vocab_size
    token_id = A.resolve_token(tok, args.token, V, "--token")
    chosen = [A.resolve_token(tok, t, V, "--tokens") for t in args.tokens.split(",") if t]
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    d = A.embeddings(model, tok, token_id, args.k, chosen)
    return d, views.show_embeddings(d), lambda path: views.plot_embeddings(d, path)


def run_surprise(args, model, tok, ids):
    d = A.surprise(model, tok, ids)
    return d, views.show_surprise(d), lambda path: views.plot_surprise(d, path)


def run_report(args, model, tok, ids):
    from .report import build_report
    if not args.out or not args.out.endswith((".html", ".htm")):
        raise ValueError(f"report needs --out FILE.html, got {args.out!r}")
    started = time.perf_counter()
    tokens = [A.token_text(tok, i) for i in ids]
    out = A.run_all(model, ids)          # one forward pass for everything but attribution
    attention = A.attention(model, ids, out)
    nxt = A.next_token(model, tok, ids, args.top_k, args.temperature, out)
    lens = A.logit_lens(model, tok, ids, out)
    attribution = A.attribute(model, tok, ids, _target(args, model, tok, ids, out), args.steps,
                              args.score)
    surprise = A.surprise(model, tok, ids, out) if len(ids) > 1 else {
        "tokens": [], "perplexity": float("nan"), "threshold_bits": 0.0, "mean_nll": 0.0}
    meta = {"checkpoint": args.checkpoint, "n_params": int(model.num_parameters())}
    page = build_report(meta, tokens, attention, nxt, lens, attribution, surprise)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    seconds = time.perf_counter() - started
    d = {"out": args.out, "bytes": len(page.encode("utf-8")), "tokens": len(ids),
         "seconds": round(seconds, 3), "target": attribution["target"],
         "completeness_error": attribution["completeness_error"],
         "perplexity": surprise["perplexity"]}
    text = (f"wrote {args.out} ({d['bytes'] / 1e6:.2f} MB, {len(ids)} tokens, "
            f"{seconds:.2f} s): open it in a browser and hover the tokens")
    return d, text, None


RUNNERS = {"next": run_next, "attention": run_attention, "lens": run_lens,
           "attribute": run_attribute, "embeddings": run_embeddings, "surprise": run_surprise,
           "report": run_report}


# ---------------------------------------------------------------------------------------------


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def inspect(args, out=None):
    """Run one parsed command line; raises ValueError/OSError with a one-line message."""
    out = out if out is not None else sys.stdout
    from .. import kernels
    from ..checkpoint import load_model_and_tokenizer
    if args.num_threads:
        kernels.set_num_threads(args.num_threads)
    # checked before the checkpoint is loaded (--top-k -3 and --temperature nan ran silently)
    if getattr(args, "top_k", 1) < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    temperature = getattr(args, "temperature", 1.0)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"--temperature must be a finite number > 0, got {temperature}")
    if args.out and args.command != "report" and not args.out.endswith(".png"):
        raise ValueError(f"--out {args.out}: {args.command} writes a picture, give a .png "
                         "file name")
    if args.out and os.path.dirname(args.out) and not os.path.isdir(os.path.dirname(args.out)):
        raise ValueError(f"--out {args.out}: the directory {os.path.dirname(args.out)} "
                         "does not exist")
    model, tok, _ = load_model_and_tokenizer(args.checkpoint, args.which)
    ids = A.encode_text(model, tok, args.text) if args.text is not None else []
    data, text, plot = RUNNERS[args.command](args, model, tok, ids)
    if args.out and plot is not None:
        plot(args.out)
    if args.json:
        out.write(json.dumps(_jsonable(data), ensure_ascii=False) + "\n")
    else:
        out.write(text + "\n")
        if args.out and plot is not None:
            out.write(f"wrote {args.out}\n")
    return data


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        inspect(args)
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG} {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0
