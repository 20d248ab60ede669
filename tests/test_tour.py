"""docs/tour.md cannot go stale: every command in it runs, and every file and function it tells a
reader to open exists.

The commands run exactly as written, in order, in a temporary directory (with `examples/`
linked in), except that training is shortened: `--max-steps N` becomes `--max-steps 20` and
`--eval-interval N` becomes 10, so the whole tour takes about a minute instead of half an hour.
The Chinese tour (docs/tour.zh.md) must list the same commands in the same order.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOURS = [os.path.join(ROOT, "docs", name) for name in ("tour.md", "tour.zh.md")]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def commands(text):
    """The lines of the ```bash blocks (indented ones inside lists too), in order."""
    out, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = stripped == "```bash" if not inside else False
            continue
        if inside and stripped and not stripped.startswith("#"):
            out.append(stripped)
    return out


def test_both_tours_list_the_same_commands_and_follow_the_article():
    en, zh = (read(p) for p in TOURS)
    assert commands(en) == commands(zh) and len(commands(en)) >= 15
    headings = [h for h in re.findall(r"^## (.+)$", en, re.M)]
    for word in ("embeddings", "attention", "Pre-training", "Fine-tuning", "formula",
                 "Hugging Face", "applications", "Overfitting", "Explainability"):
        assert any(word in h for h in headings), word
    assert len(re.findall(r"^## ", zh, re.M)) == len(headings)
    kinds = {re.match(r"(?:echo .*\| )?python (?:-m )?([\w./]+)", c).group(1)
             for c in commands(en) if "python" in c}
    for needed in ("tinyroots.inspect", "tinyroots.train", "tinyroots.finetune",
                   "tinyroots.generate", "tinyroots.chat"):
        assert needed in kinds


def test_every_file_and_function_named_exists():
    names = 0
    for path in TOURS:
        text = read(path)
        for match in re.finditer(r"`((?:tinyroots|csrc|examples|tests)/[\w/.]+)`"
                                 r"((?:\s*`[\w.]+`)?)", text):
            rel, name = match.group(1), match.group(2).strip().strip("`")
            full = os.path.join(ROOT, rel)
            assert os.path.exists(full), f"{path}: {rel} does not exist"
            if name and os.path.isfile(full) and full.endswith(".py"):
                source = read(full)
                for part in name.split("."):
                    assert re.search(rf"^\s*(def|class) {re.escape(part)}\b", source, re.M), \
                        f"{path}: {rel} has no {part} (named as `{name}`)"
                names += 1
    assert names >= 10


def shortened(command):
    command = re.sub(r"--max-steps \d+", "--max-steps 20", command)
    return re.sub(r"--eval-interval \d+", "--eval-interval 10", command)


@pytest.mark.slow
def test_every_command_in_the_tour_runs(tmp_path):
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    python = sys.executable
    for command in commands(read(TOURS[0])):
        run = shortened(command).replace("python ", f"{python} ")
        p = subprocess.run(run, shell=True, cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, f"{command}\n--- stdout\n{p.stdout[-2000:]}\n--- stderr\n" \
                                  f"{p.stderr[-3000:]}"
        assert "Traceback" not in p.stderr, command
    report = (tmp_path / "out" / "tour-report.html").read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>")
    assert (tmp_path / "out" / "tour-intents" / "eval.json").exists()
