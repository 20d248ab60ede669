"""README.md and examples/README.md are a contract: every command in them runs here.

Each command found in a document's code blocks (```bash fences and 4-space indented blocks;
lines joined at a trailing backslash, comments dropped) must be a key of COMMANDS, which maps
it to the form this test runs and to what the text promises of it:

    "python -m tinyroots.train": Run(FAST_TRAIN, files("out/best/model.safetensors"))

A long command runs in a fast form (a few steps, a one-layer model); `SAME` runs it as written.
A command that cannot run inside a test (installing into the environment) maps to Skip(reason),
and the reason is printed. test_every_command_has_a_fast_form fails when a document gains a
command that the table does not know, so a new README command comes with its test.

The commands run in the documents' order in one working directory (a copy of examples/, the
package linked in, the small input files the text names created), starting from one tiny
pre-trained run in out/ (the quick start's). Python code blocks are executed as written.
Figures at full size (accuracy, BLEU, time) are measured by bench/bench_finetune.py; the fast
forms check that each command runs, exits 0, writes what the text says and answers sensibly.
"""

import ast
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "examples/README.md")
PY = shlex.quote(sys.executable)

# the tiny model every fast form trains or starts from: seconds, not minutes
TINY = "--n-layer 1 --n-head 2 --n-embd 32 --block-size 64 --vocab-size 1024"
QUIET_TRAIN = "--eval-interval 2 --eval-batches 1 --sample-tokens 0 --progress false"
QUIET_FT = "--max-steps 2 --eval-interval 1 --progress false --eval-examples 8"


# ---------------------------------------------------------------------------------------------
# reading the documents


def code_blocks(markdown):
    """-> [(language, text)] of fenced blocks (```bash) and 4-space indented blocks.

    >>> code_blocks("a\\n\\n    run x\\n\\n```python\\nprint(1)\\n```\\n")
    [('indented', 'run x'), ('python', 'print(1)')]
    """
    lines, out, i = markdown.splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append((fence.group(1) or "text", "\n".join(lines[i + 1:j])))
            i = j + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()) \
                and not lines[i].lstrip().startswith(("|", "-", "*")):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append(("indented", "\n".join(line[4:] for line in lines[i:j]).strip()))
            i = j
        else:
            i += 1
    return out


def strip_comment(line):
    """The command without its trailing `# comment` (a # inside quotes stays)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def shell_commands(text):
    """Commands of a shell block: continuation lines joined, comments and blank lines dropped,
    runs of spaces made one; a quoted argument spanning lines (curl -d '{...}') stays whole."""
    out, current, heredoc = [], "", None
    for line in text.splitlines():
        if heredoc is not None:             # cat > hosts <<'END' ... END: one command
            current += "\n" + line
            if line.strip() == heredoc:
                out.append(current)
                current, heredoc = "", None
            continue
        marker = re.search(r"<<-?\s*'?(\w+)'?\s*$", line)
        if marker and not current:
            current, heredoc = line.strip(), marker.group(1)
            continue
        line = strip_comment(line) if not current.count("'") % 2 else line.rstrip()
        if not line.strip() and not current:
            continue
        current += (" " if current else "") + line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current.count("'") % 2:          # inside a quoted JSON body: keep reading
            continue
        out.append(re.sub(r"\s+", " ", current).strip())
        current = ""
    return [c for c in out if c]


def doc_commands(doc):
    """-> [(kind, text)] in the document's order: ("shell", command) or ("python", code)."""
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        markdown = f.read()
    out = []
    for lang, text in code_blocks(markdown):
        if lang == "python":
            out.append(("python", text))
        elif lang in ("bash", "sh", "shell", "console", "indented"):
            out += [("shell", c) for c in shell_commands(text)]
    return out


# ---------------------------------------------------------------------------------------------
# what a command promises


class Run:
    """Run `fast` (SAME: the command as written) with bash in the working directory, expect
    exit code `code`, feed `stdin`, then call each check(result, workdir)."""

    def __init__(self, fast, *checks, code=0, stdin=None, timeout=300, in_repo=False):
        self.fast, self.checks, self.code, self.stdin, self.timeout = \
            fast, checks, code, stdin, timeout
        self.in_repo = in_repo      # run in the repository (pytest's tests/ and bench/)


class Skip:
    def __init__(self, reason):
        self.reason = reason


SAME = None


def files(*paths):
    def check(res, wd):
        missing = [p for p in paths if not os.path.exists(os.path.join(wd, p))]
        assert not missing, f"not written: {missing}"
    return check


def says(pattern, stream="stdout"):
    def check(res, wd):
        text = getattr(res, stream)
        assert re.search(pattern, text, re.S), f"{stream} lacks {pattern!r}:\n{text[-2000:]}"
    return check


def in_range(path, key, lo, hi):
    def check(res, wd):
        with open(os.path.join(wd, path)) as f:
            value = json.load(f)
        for part in key.split("."):
            value = value[part]
        assert lo <= value <= hi, f"{path} {key} = {value}, expected {lo}..{hi}"
    return check


def same_as_repo(*paths):
    """A generator rewrote these files: byte for byte what the repository holds."""
    def check(res, wd):
        for p in paths:
            with open(os.path.join(wd, p), "rb") as a, open(os.path.join(ROOT, p), "rb") as b:
                assert a.read() == b.read(), f"{p} differs from the repository's copy"
    return check


FT_INTENTS = ("--train examples/faq/intent_train.jsonl --val examples/faq/intent_val.jsonl")
CHAT_DATA = "--train examples/faq/chat_train.jsonl --val examples/faq/chat_val.jsonl"
MT_DATA = ("--train examples/translation/en_fr_train.jsonl "
           "--val examples/translation/en_fr_val.jsonl")
CLASSIFIED = (files("clf/eval.json", "clf/best/labels.json"),
              in_range("clf/eval.json", "accuracy", 0.0, 1.0))

COMMANDS = {
    # README.md: quick start
    "pip install .": Skip("installs into the environment: .ci/run does it on every CI run"),
    "python -m tinyroots.train": Run(
        f"python -m tinyroots.train --out-dir out --overwrite --max-steps 4 {TINY} "
        f"{QUIET_TRAIN}",
        files("out/best/model.safetensors", "out/last/trainer_state.json", "out/metrics.jsonl",
              "out/summary.json", "out/train_config.json")),
    'python -m tinyroots.generate --checkpoint out --prompt "ROMEO:"': Run(
        'python -m tinyroots.generate --checkpoint out --prompt "ROMEO:" --max-new-tokens 8',
        says(r"^ROMEO:")),
    'pip install ".[test]" && pytest': Run(
        "python -m pytest -p no:cacheprovider --collect-only -q tests/test_tokenizer.py "
        "tests/test_model.py", says(r"\d+ tests? collected"), in_repo=True),
    "pytest bench/ --benchmark-only": Run(
        "python -m pytest -p no:cacheprovider bench/ --benchmark-only --collect-only -q",
        says(r"bench_finetune\.py::"), says(r"bench_train_step\.py::"),
        says(r"\d+ tests? collected"), in_repo=True),
    # several processes (MPI): 2 ranks, however many the text asks for (this has 2 cores)
    'pip install ".[mpi]"': Skip("installs into the environment: the test extra brings "
                                 "mpi4py and mpich"),
    "mpiexec -n 2 python -m tinyroots.train --preset shakespeare_char --grad-accum-steps 2": Run(
        "mpiexec -n 2 python -m tinyroots.train --preset shakespeare_char --grad-accum-steps 2 "
        f"--max-steps 2 {TINY} --batch-size 2 {QUIET_TRAIN} --out-dir mpi_char",
        files("mpi_char/best/model.safetensors"), timeout=600),
    "mpiexec -n 4 python -m tinyroots.train --grad-accum-steps 8 --zero 1": Run(
        "mpiexec -n 2 python -m tinyroots.train --grad-accum-steps 8 --zero 1 --max-steps 2 "
        f"{TINY} --batch-size 2 {QUIET_TRAIN} --out-dir mpi_zero",
        files("mpi_zero/last/optimizer.safetensors"), timeout=600),
    "mpiexec -n 2 python -m tinyroots.finetune lm --init out/best --train a.txt --val b.txt "
    "--grad-accum-steps 2": Run(
        "mpiexec -n 2 python -m tinyroots.finetune lm --init out/best --train a.txt --val "
        "b.txt --grad-accum-steps 2 --max-steps 2 --eval-interval 1 --progress false "
        "--out-dir mpi_lm",
            files("mpi_lm/eval.json"), timeout=600),
    "mpiexec -n 2 python -m tinyroots.info": Run(SAME, says(r"rank"), timeout=600),
    "cat > hosts <<'END'\nnode1:2\nnode2:2\nEND": Run(SAME, files("hosts")),
    "mpiexec -f hosts -n 4 python -m tinyroots.train --data /shared/corpus --out-dir "
    "/shared/run --grad-accum-steps 8 --num-threads 8": Skip(
        "needs the machines node1 and node2 and a filesystem they share"),
    "pytest bench/bench_gemm.py --benchmark-only": Run(
        "python -m pytest -p no:cacheprovider bench/bench_gemm.py --benchmark-only "
        "--collect-only -q", says(r"bench_gemm\.py::"), says(r"^((?!bench_kernels).)*$"),
        in_repo=True),
    "pytest bench/ --benchmark-only -k attention": Run(
        "python -m pytest -p no:cacheprovider bench/ --benchmark-only -k attention "
        "--collect-only -q", says(r"attention"), says(r"\d+/\d+ tests? collected"),
        in_repo=True),
    # training
    "python -m tinyroots.train --help": Run(SAME, says(r"--max-steps"), says(r"--resume")),
    "python -m tinyroots.train --preset shakespeare_char": Run(
        f"python -m tinyroots.train --preset shakespeare_char --max-steps 2 {TINY} "
        f"--batch-size 2 {QUIET_TRAIN}",
        files("out-shakespeare-char/best/model.safetensors")),
    "python -m tinyroots.train --config run.toml --learning-rate 3e-4": Run(
        f"python -m tinyroots.train --config run.toml --learning-rate 3e-4 {TINY} "
        f"{QUIET_TRAIN} --max-steps 2",
        in_range("from_toml/train_config.json", "learning_rate", 3e-4, 3e-4)),
    "python -m tinyroots.train --data my_texts/ --vocab-size 8192": Run(
        "python -m tinyroots.train --data my_texts/ --vocab-size 8192 --n-layer 1 --n-head 2 "
        f"--n-embd 32 {QUIET_TRAIN} --max-steps 2 --out-dir my_run --batch-size 2 "
        "--block-size 16",
        files("my_run/best/model.safetensors")),
    "python -m tinyroots.train --out-dir out --resume": Run(
        f"python -m tinyroots.train --out-dir out --resume --max-steps 6 {QUIET_TRAIN}",
        in_range("out/summary.json", "steps", 6, 6)),
    # data
    "python -m tinyroots.data clean corpus/ more.jsonl.gz -o cleaned --workers 2 "
    "--keep-rejected": Run(SAME, files("cleaned/clean.jsonl", "cleaned/report.json")),
    "python -m tinyroots.data clean corpus/ -o cleaned_en --languages en,fr": Run(
        SAME, files("cleaned_en/clean.jsonl")),
    "python -m tinyroots.data prepare corpus/ --cache-dir shards --vocab-size 8192": Run(
        SAME, files("shards")),
    "python -m tinyroots.data --help": Run(SAME, says("clean"), says("prepare")),
    "python -m tinyroots.data clean tinyroots/data/samples/zh_language_models.txt -o zh_clean":
        Run(SAME, files("zh_clean/clean.jsonl"), says(r"zh\s+1\s+1")),
    "python -m tinyroots.train --data tinyroots/data/samples/zh_language_models.txt --out-dir "
    "zh_run --max-steps 300 --n-layer 2 --n-embd 64 --n-head 2 --block-size 64": Run(
        "python -m tinyroots.train --data tinyroots/data/samples/zh_language_models.txt "
        f"--out-dir zh_run --max-steps 3 --n-layer 1 --n-embd 32 --n-head 2 --block-size 64 "
        f"{QUIET_TRAIN}", files("zh_run/best/model.safetensors")),
    'python -m tinyroots.generate --checkpoint zh_run --prompt "语言模型"': Run(
        'python -m tinyroots.generate --checkpoint zh_run --prompt "语言模型" '
        "--max-new-tokens 8", says("^语言模型"), says("\ufffd{0}")),
    # fine-tuning and applications
    "python -m tinyroots.finetune classify --init out --train t.jsonl --val v.jsonl --out-dir "
    "clf": Run(f"python -m tinyroots.finetune classify --init out --train t.jsonl --val "
               f"v.jsonl --out-dir clf {QUIET_FT}", *CLASSIFIED),
    "python -m tinyroots.finetune chat --init out --train dialogues.jsonl --val "
    "dialogues_val.jsonl --out-dir bot": Run(
        "python -m tinyroots.finetune chat --init out --train dialogues.jsonl --val "
        f"dialogues_val.jsonl --out-dir bot {QUIET_FT} --block-size 128",
        files("bot/best/model.safetensors", "bot/eval.json"),
        in_range("bot/eval.json", "steps", 2, 2)),
    "python -m tinyroots.chat --checkpoint bot": Run(
        "python -m tinyroots.chat --checkpoint bot --max-new-tokens 4",
        says(r"/exit", "stderr"), says(r"^you> bot> .+\nyou> $"),
        stdin="Where is my order?\n/exit\n"),
    "python -m tinyroots.finetune translate --init out --train pairs.jsonl --val "
    "pairs_val.jsonl --out-dir mt": Run(
        "python -m tinyroots.finetune translate --init out --train pairs.jsonl --val "
        f"pairs_val.jsonl --out-dir mt {QUIET_FT} --max-new-tokens 6",
        files("mt/best/model.safetensors"), in_range("mt/eval.json", "bleu", 0, 100)),
    'python -m tinyroots.generate --checkpoint mt --task translate --prompt "The cat sleeps."':
        Run('python -m tinyroots.generate --checkpoint mt --task translate --prompt '
            '"The cat sleeps." --max-new-tokens 6', says(r"(?s).")),
    "python -m tinyroots.tune classify --init out --train t.jsonl --val v.jsonl --out-dir "
    "search --learning-rate 3e-4,1e-3 --lora-rank 0,8": Run(
        "python -m tinyroots.tune classify --init out --train t.jsonl --val v.jsonl --out-dir "
        "search --learning-rate 3e-4,1e-3 --lora-rank 0,8 --max-steps 1",
        files("search/best_config.json", "search/results.md"), says(r"\b4\b")),
    # generation
    'python -m tinyroots.generate --checkpoint out --prompt "ROMEO:" --max-new-tokens 200 '
    "--temperature 0.8 --top-k 50 --top-p 0.95 --seed 1 --num-samples 2": Run(
        'python -m tinyroots.generate --checkpoint out --prompt "ROMEO:" --max-new-tokens 8 '
        "--temperature 0.8 --top-k 50 --top-p 0.95 --seed 1 --num-samples 2",
        says(r"--- sample 1 ---\s*\nROMEO:"), says(r"--- sample 2 ---\s*\nROMEO:")),
    "python -m tinyroots.generate --checkpoint out --temperature 0": Run(
        "python -m tinyroots.generate --checkpoint out --temperature 0 --max-new-tokens 8",
        says(r"(?s).")),
    "python -m tinyroots.generate --checkpoint out --prompt-file draft.txt": Run(
        "python -m tinyroots.generate --checkpoint out --prompt-file draft.txt "
        "--max-new-tokens 8", says(r"^Dear friends,")),
    'echo "KING RICHARD:" | python -m tinyroots.generate --checkpoint out --prompt -': Run(
        'echo "KING RICHARD:" | python -m tinyroots.generate --checkpoint out --prompt - '
        "--max-new-tokens 8", says(r"^KING RICHARD:")),
    # serving: tests/test_serve*.py start the server and send these requests
    'pip install ".[serve]"': Skip("installs into the environment: .ci/run installs the "
                                   "test extra, which brings the serve dependencies"),
}


class Serve:
    """Start `python -m tinyroots.serve` with these arguments on a free port (replacing any
    server this test started before); the curl lines and the OpenAI block after it talk to
    it, with :8000 replaced by its port."""

    def __init__(self, *args):
        self.args = args


CHAT_REPLY = says(r'"role":\s*"assistant"')
COMMANDS.update({
    "python -m tinyroots.serve --checkpoint out/faq-chat": Serve(),
    "python -m tinyroots.serve --checkpoint out/faq-chat --host 0.0.0.0 --api-key s3cret":
        Serve("--host", "0.0.0.0", "--api-key", "s3cret"),
    "python -m tinyroots.serve --checkpoint out/faq-chat &": Serve(),
    'curl http://127.0.0.1:8000/v1/chat/completions -H "Content-Type: application/json" -d '
    '\'{ "model": "faq-chat", "messages": [{"role": "user", "content": "Where is my order '
    '12345?"}], "temperature": 0}\'': Run(SAME, CHAT_REPLY),
    'curl -N http://127.0.0.1:8000/v1/completions -H "Content-Type: application/json" -d '
    '\'{ "model": "faq-chat", "prompt": "Thank you for", "max_tokens": 30, "stream": true}\'':
        Run(SAME, says(r"^data: \{"), says(r"data: \[DONE\]")),
    'curl -s http://127.0.0.1:8000/v1/chat/completions -H "Content-Type: application/json" -d '
    '\'{"messages": [{"role": "system", "content": "You are the shop assistant."}, {"role": '
    '"user", "content": "My parcel has not arrived yet."}]}\'': Run(SAME, CHAT_REPLY),
    # with out/pretrain there, the script skips pre-training (its 600 steps are long)
    "bash examples/faq_chat.sh": Run(
        "(test -f out/pretrain/best/config.json || python -m tinyroots.train --out-dir "
        f"out/pretrain --max-steps 4 {TINY} {QUIET_TRAIN}) && bash examples/faq_chat.sh "
        f"{QUIET_FT} --overwrite --max-new-tokens 8",
        files("out/faq-chat/best/model.safetensors"),
        same_as_repo("examples/faq/chat_train.jsonl")),
    # inspecting
    'python -m tinyroots.inspect next --checkpoint out --text "ROMEO:" --temperature 0.7':
        Run(SAME, says(r"exp")),
    'python -m tinyroots.inspect attention --checkpoint out --text "ROMEO: But soft" --layer 0 '
    "--head 1": Run(SAME, says(r"\S")),
    'python -m tinyroots.inspect lens --checkpoint out --text "ROMEO: What light"':
        Run(SAME, says(r"\S")),
    'python -m tinyroots.inspect attribute --checkpoint out --text "ROMEO: What say you, my" '
    '--target " lord"': Run(SAME, says(r"complete", "stdout")),
    'python -m tinyroots.inspect embeddings --checkpoint out --token " the" --tokens " a, and" '
    "--out map.png": Run(SAME, files("map.png")),
    'python -m tinyroots.inspect surprise --checkpoint out --text "ROMEO: What light"':
        Run(SAME, says(r"perplexity")),
    'python -m tinyroots.inspect report --checkpoint out --text "ROMEO: What light" --out '
    "report.html": Run(SAME, files("report.html")),
})

# examples/README.md
COMMANDS.update({
    "python examples/make_faq.py": Run(SAME, same_as_repo(*(
        f"examples/faq/{n}.jsonl" for n in ("intent_train", "intent_val", "intent_paraphrase",
                                            "chat_train", "chat_val", "chat_paraphrase")))),
    "python examples/make_translation.py": Run(SAME, same_as_repo(
        "examples/translation/en_fr_train.jsonl", "examples/translation/en_fr_val.jsonl")),
    "python -m tinyroots.train --out-dir out/pretrain --max-steps 600": Run(
        f"python -m tinyroots.train --out-dir out/pretrain --max-steps 4 {TINY} {QUIET_TRAIN} "
        "--overwrite",      # README.md's faq_chat.sh made one before, in the same directory
        files("out/pretrain/best/model.safetensors")),
    "python -m tinyroots.finetune classify --init out/pretrain " + FT_INTENTS + " --test "
    "examples/faq/intent_paraphrase.jsonl --out-dir out/intents --max-steps 600 --learning-rate "
    "1e-3 --eval-interval 50 --batch-size 16 --pooling mean": Run(
        f"python -m tinyroots.finetune classify --init out/pretrain {FT_INTENTS} --test "
        f"examples/faq/intent_paraphrase.jsonl --out-dir out/intents --pooling mean {QUIET_FT}",
        files("out/intents/best/labels.json"),
        in_range("out/intents/eval.json", "accuracy", 0, 1),
        in_range("out/intents/eval.json", "test.intent_paraphrase.accuracy", 0, 1),
        in_range("out/intents/eval.json", "test.intent_paraphrase.n", 480, 480)),
    "python -m tinyroots.evaluate --checkpoint out/intents --task classify --data "
    "examples/faq/intent_val.jsonl": Run(SAME, says(r'"accuracy"'), says(r'"n": 480')),
    "python -m tinyroots.finetune classify --init out/pretrain " + FT_INTENTS + " --out-dir "
    "out/intents-lora --lora-rank 8 --lora-alpha 16 --lora-targets attn --lora-dropout 0.1 "
    "--max-steps 3000 --learning-rate 3e-3 --eval-interval 100 --pooling mean": Run(
        f"python -m tinyroots.finetune classify --init out/pretrain {FT_INTENTS} --out-dir "
        "out/intents-lora --lora-rank 8 --lora-alpha 16 --lora-targets attn --lora-dropout 0.1 "
        f"--learning-rate 3e-3 --pooling mean {QUIET_FT}",
        files("out/intents-lora/best/adapter_model.safetensors")),
    "python -m tinyroots.tune classify --init out/pretrain " + FT_INTENTS + " --out-dir "
    "out/tune --max-steps 150 --learning-rate 3e-4,1e-3,3e-3 --weight-decay 0,0.1 --lora-rank "
    "0,8": Run(
        f"python -m tinyroots.tune classify --init out/pretrain {FT_INTENTS} --out-dir out/tune "
        "--max-steps 1 --learning-rate 3e-4,1e-3,3e-3 --weight-decay 0,0.1 "
        "--lora-rank 0,8", files("out/tune/best_config.json"), says(r"\b12\b")),
    "python -m tinyroots.tune classify --init out/pretrain " + FT_INTENTS + " --out-dir "
    "out/tune-random --search random --trials 8 --learning-rate 1e-4:3e-3 --dropout 0:0.2 "
    "--lora-rank 0,4,8": Run(
        f"python -m tinyroots.tune classify --init out/pretrain {FT_INTENTS} --out-dir "
        "out/tune-random --search random --trials 2 --learning-rate 1e-4:3e-3 --dropout 0:0.2 "
        "--lora-rank 0,4,8 --max-steps 1",
        files("out/tune-random/best_config.json")),
    "python -m tinyroots.finetune --config out/tune/best_config.json": Run(
        f"python -m tinyroots.finetune --config out/tune/best_config.json {QUIET_FT} "
        "--out-dir out/tuned", files("out/tuned/eval.json")),
    "python -m tinyroots.finetune chat --init out/pretrain " + CHAT_DATA + " --test "
    "examples/faq/chat_paraphrase.jsonl --out-dir out/faq-chat --block-size 256 --batch-size 8 "
    "--max-steps 1600 --learning-rate 1e-3 --eval-interval 100": Run(
        f"python -m tinyroots.finetune chat --init out/pretrain {CHAT_DATA} --test "
        "examples/faq/chat_paraphrase.jsonl --out-dir out/faq-chat --block-size 256 "
        f"--batch-size 8 --learning-rate 1e-3 {QUIET_FT} --overwrite --max-new-tokens 8",
        files("out/faq-chat/best/model.safetensors"),
        in_range("out/faq-chat/eval.json", "test.chat_paraphrase.intent_accuracy", 0, 1),
        in_range("out/faq-chat/eval.json", "test.chat_paraphrase.intent_examples", 128, 128)),
    "python -m tinyroots.chat --checkpoint out/faq-chat": Run(
        "python -m tinyroots.chat --checkpoint out/faq-chat --max-new-tokens 4",
        says(r"/exit", "stderr"), says(r"^you> bot> .+\nyou> $"),
        stdin="Where is my order #12345?\n/exit\n"),
    "python -m tinyroots.finetune translate --init out/pretrain " + MT_DATA + " --out-dir "
    "out/en-fr --max-steps 800 --learning-rate 1e-3 --eval-interval 100": Run(
        f"python -m tinyroots.finetune translate --init out/pretrain {MT_DATA} --out-dir "
        f"out/en-fr --learning-rate 1e-3 {QUIET_FT} --bleu-examples 4 --max-new-tokens 6",
        in_range("out/en-fr/eval.json", "bleu", 0, 100)),
    "python -m tinyroots.generate --checkpoint out/en-fr --task translate --prompt \"The small "
    "cat does not eat the red apple.\" --temperature 0": Run(
        "python -m tinyroots.generate --checkpoint out/en-fr --task translate --prompt \"The "
        "small cat does not eat the red apple.\" --temperature 0 --max-new-tokens 6",
        says(r"(?s).")),
    "python -m tinyroots.generate --checkpoint out/pretrain --prompt-file draft.txt "
    "--max-new-tokens 200 --temperature 0.8 --top-p 0.95": Run(
        "python -m tinyroots.generate --checkpoint out/pretrain --prompt-file draft.txt "
        "--max-new-tokens 8 --temperature 0.8 --top-p 0.95", says(r"^Dear friends,")),
    "cat draft.txt | python -m tinyroots.generate --checkpoint out/pretrain --prompt - "
    "--num-samples 3 --seed 1": Run(
        "cat draft.txt | python -m tinyroots.generate --checkpoint out/pretrain --prompt - "
        "--num-samples 3 --seed 1 --max-new-tokens 8", says(r"--- sample 3 ---\s*\nDear")),
    "python -m tinyroots.finetune lm --init out/pretrain --train my_notes.txt --val "
    "my_notes_heldout.txt --out-dir out/my-domain --max-steps 300": Run(
        "python -m tinyroots.finetune lm --init out/pretrain --train my_notes.txt --val "
        f"my_notes_heldout.txt --out-dir out/my-domain {QUIET_FT}",
        in_range("out/my-domain/eval.json", "perplexity", 1, 1e6)),
    "python -m tinyroots.generate --checkpoint out/my-domain --prompt-file draft.txt": Run(
        "python -m tinyroots.generate --checkpoint out/my-domain --prompt-file draft.txt "
        "--max-new-tokens 8", says(r"^Dear friends,")),
})


# ---------------------------------------------------------------------------------------------
# the working directory: what a reader has next to the repository


DRAFT = "Dear friends, the shop opens again on Monday and"
NOTES = ("Our shop sells tents, lanterns and boots. Orders ship within two days. " * 30)


def write(path, text):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def jsonl(path, rows):
    write(path, "".join(json.dumps(r) + "\n" for r in rows))


def make_inputs(wd):
    """The placeholder files the documents name (t.jsonl, corpus/, draft.txt, ...), small."""
    shutil.copytree(os.path.join(ROOT, "examples"), os.path.join(wd, "examples"))
    os.symlink(os.path.join(ROOT, "tinyroots"), os.path.join(wd, "tinyroots"))
    faq = os.path.join(ROOT, "examples", "faq")

    def head(name, n):
        with open(os.path.join(faq, name), encoding="utf-8") as f:
            return [json.loads(line) for line in f][:n]
    jsonl(os.path.join(wd, "t.jsonl"), head("intent_train.jsonl", 96))
    jsonl(os.path.join(wd, "v.jsonl"), head("intent_val.jsonl", 24))
    jsonl(os.path.join(wd, "dialogues.jsonl"), head("chat_train.jsonl", 16))
    jsonl(os.path.join(wd, "dialogues_val.jsonl"), head("chat_val.jsonl", 4))
    mt = os.path.join(ROOT, "examples", "translation", "en_fr_train.jsonl")
    with open(mt, encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f][:40]
    jsonl(os.path.join(wd, "pairs.jsonl"), pairs[:32])
    jsonl(os.path.join(wd, "pairs_val.jsonl"), pairs[32:])
    write(os.path.join(wd, "draft.txt"), DRAFT)
    write(os.path.join(wd, "my_notes.txt"), NOTES)
    write(os.path.join(wd, "a.txt"), NOTES)
    write(os.path.join(wd, "b.txt"), NOTES[:600])
    write(os.path.join(wd, "my_notes_heldout.txt"), NOTES[:600])
    write(os.path.join(wd, "run.toml"), 'out_dir = "from_toml"\nlearning_rate = 1e-3\n')
    with open(os.path.join(ROOT, "tinyroots", "assets", "tinyshakespeare.txt"),
              encoding="utf-8") as f:
        shakespeare = f.read()
    for i in range(3):
        write(os.path.join(wd, "my_texts", f"part{i}.txt"),
              shakespeare[i * 20000:(i + 1) * 20000])
    docs = [p for p in shakespeare[:60000].split("\n\n") if len(p.split()) > 30]
    for i in range(4):
        write(os.path.join(wd, "corpus", f"doc{i}.txt"), "\n\n".join(docs[i::4]))
    with gzip.open(os.path.join(wd, "more.jsonl.gz"), "wt", encoding="utf-8") as f:
        for d in docs[:20]:
            f.write(json.dumps({"text": d}) + "\n")
    make_gpt2_dir(os.path.join(wd, "gpt2"))


def make_gpt2_dir(path):
    """A GPT-2-shaped directory for the "gpt2" snippet: GPT-2's real tokenizer files and a tiny
    random model over its 50257 tokens (the 124M weights are not part of the repository)."""
    import tinyroots as tr
    src = os.environ.get("TINYROOTS_GPT2_TOKENIZER", "")
    if not os.path.isdir(src):
        pytest.skip("TINYROOTS_GPT2_TOKENIZER does not name GPT-2's tokenizer directory")
    tok = tr.GPT2Tokenizer.from_pretrained(src)
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=50257,
                                block_size=64))
    model.save_pretrained(path, tokenizer=tok)


def env():
    # subtle: without the PYTEST_XDIST_* variables of this test's own worker, a pytest the
    # documents run would believe it is an xdist worker too (and refuse --benchmark-only)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return dict(clean, OMP_NUM_THREADS="1", TINYROOTS_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def as_run(command):
    """The command as bash runs it here: python, pytest and mpiexec are this interpreter's."""
    command = re.sub(r"(^|[|&;]\s*|mpiexec [^|&;]*?)python\b", lambda m: m.group(1) + PY,
                     command)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(mpiexec):
        command = re.sub(r"^mpiexec\b", shlex.quote(mpiexec), command)
    return re.sub(r"(^|[|&;]\s*)pytest\b", lambda m: m.group(1) + PY + " -m pytest", command)


# ---------------------------------------------------------------------------------------------
# running a document


class Session:
    """A document's commands run in order in one working directory; one server at a time."""

    def __init__(self, wd):
        self.wd, self.server = wd, None

    def shell(self, command):
        spec = COMMANDS[command]
        if isinstance(spec, Skip):
            print(f"skipped: {command}: {spec.reason}")
            return
        if isinstance(spec, Serve):
            return self.serve(spec)
        text = command if spec.fast is SAME else spec.fast
        if self.server is not None:
            text = text.replace("127.0.0.1:8000", f"127.0.0.1:{self.server.port}")
        res = subprocess.run(["bash", "-c", as_run(text)],
                             cwd=ROOT if spec.in_repo else self.wd, env=env(),
                             input=spec.stdin, capture_output=True, text=True,
                             timeout=spec.timeout)
        assert res.returncode == spec.code, (
            f"{command}\nran as: {text}\nexit {res.returncode}\n{res.stderr[-3000:]}")
        for check in spec.checks:
            try:
                check(res, self.wd)
            except AssertionError as exc:
                raise AssertionError(f"{command}\nran as: {text}\n{exc}") from None

    def serve(self, spec):
        import httpx
        from serve_util import ServerProcess
        self.stop()
        args = [a if a != "0.0.0.0" else "127.0.0.1" for a in spec.args]
        checkpoint = os.path.join(self.wd, "out", "faq-chat")
        if not os.path.exists(checkpoint):      # README serves before it makes out/faq-chat:
            shutil.copytree(os.path.join(self.wd, "bot"), checkpoint)  # its chat model so far
        if "--api-key" in args:
            # the key is asked for: without it 401, with it the request is served
            server = ServerProcess(checkpoint, *args, env=env())
            try:
                body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                url = server.url + "/v1/chat/completions"
                assert httpx.post(url, json=body, timeout=120).status_code == 401
                key = args[args.index("--api-key") + 1]
                assert httpx.post(url, json=body, timeout=120, headers={
                    "Authorization": f"Bearer {key}"}).status_code == 200
            finally:
                server.stop()
            args = []               # the requests that follow in the text carry no key
        self.server = ServerProcess(checkpoint, *args, env=env())

    def python(self, code):
        """Run a python block as pasted into the interpreter: the value of a last line that is
        an expression is printed (predict(...) shows its answer)."""
        tree = ast.parse(code)
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body[-1]
            tree.body[-1] = ast.parse(f"print(repr({ast.unparse(last.value)}))").body[0]
            code = ast.unparse(tree)
        if self.server is not None:
            code = code.replace("127.0.0.1:8000", f"127.0.0.1:{self.server.port}")
        res = subprocess.run([sys.executable, "-c", code], cwd=self.wd, env=env(),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"python block failed:\n{code}\n{res.stderr[-3000:]}"
        return res

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


def missing_commands():
    return [(doc, c) for doc in DOCS for kind, c in doc_commands(doc)
            if kind == "shell" and c not in COMMANDS]


def test_every_command_has_a_fast_form():
    found = {c for doc in DOCS for kind, c in doc_commands(doc) if kind == "shell"}
    assert len(found) > 40                     # the extraction itself works
    missing = missing_commands()
    assert not missing, ("commands in the documents that tests/test_readme.py's COMMANDS does "
                         "not know (add each, with its fast form and what it promises):\n"
                         + "\n".join(f"{doc}: {c}" for doc, c in missing))


def test_shell_commands_are_split_as_a_reader_types_them():
    text = ('python -m x --a 1 \\\n    --b "#2"   # comment\n# a note\n'
            "curl -d '{\n  \"k\": 1}'\n")
    assert shell_commands(text) == ['python -m x --a 1 --b "#2"', "curl -d '{ \"k\": 1}'"]
    assert shell_commands("cat > h <<'END'\nn1:2\nEND\nls # x\n") == [
        "cat > h <<'END'\nn1:2\nEND", "ls"]


def test_readme_counts_the_benchmarks_pytest_collects():
    """README states the suite's size next to its time; both go stale when benchmarks change."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        stated = re.search(r"The suite holds (\d+) benchmarks in (\d+) files", f.read())
    assert stated, "README.md no longer says how many benchmarks the suite holds"
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "bench/",
                          "--benchmark-only", "--collect-only", "-q"], cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=300).stdout
    collected = re.search(r"(\d+) tests? collected", out)
    assert collected, out[-2000:]
    files = {line.split("::")[0] for line in out.splitlines() if "::" in line}
    assert (int(stated.group(1)), int(stated.group(2))) == (int(collected.group(1)), len(files))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("readme"))
    make_inputs(wd)
    return wd


@pytest.mark.parametrize("doc", DOCS)
def test_document_runs_in_order(doc, workdir):
    """Every command and python block of the document, in its order (README.md first: its
    quick start leaves the out/ run that later commands use)."""
    assert not missing_commands(), "see test_every_command_has_a_fast_form"
    if doc != DOCS[0] and not os.path.exists(os.path.join(workdir, "out", "best")):
        Session(workdir).shell("python -m tinyroots.train")
    session = Session(workdir)
    try:
        for kind, text in doc_commands(doc):
            if kind == "shell":
                session.shell(text)
            else:
                res = session.python(text)
                if "predict(" in text:          # the classifier answers with one label
                    assert re.fullmatch(r"\['[a-z_]+'\]\n", res.stdout), res.stdout
    finally:
        session.stop()
