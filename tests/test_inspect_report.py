"""`inspect report`: the page is self-contained, and works in a real browser (headless Chromium).

The page has a test hook: opened as report.html#selftest it hovers a token by itself and writes
what the attention view then shows into <pre id="selftest">; Chromium's --dump-dom returns the
DOM after the scripts ran, and --enable-logging=stderr reports console errors (a script that
fails to parse never reaches the page's own error handler, so both are checked).
CI installs Chromium as Debian's package: apt-get install -y chromium.
"""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import tinyroots as tr
from tinyroots.inspect import analysis as A
from tinyroots.inspect.report import build_report

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                          "google-chrome")) if p), None)
TEXT = "ROMEO: what light through yonder window breaks?"


class IdTokenizer:
    def decode(self, ids):
        return "".join(f"<{i}>" if i % 7 else "</script>" for i in ids)   # hostile on purpose


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tr.manual_seed(5)
    model = tr.GPT(tr.GPTConfig(n_layer=2, n_head=3, n_embd=24, vocab_size=50, block_size=16,
                                initializer_range=0.3)).eval()
    tok = IdTokenizer()
    ids = [1, 7, 3, 14, 9, 2, 11, 5]
    tokens = [A.token_text(tok, i) for i in ids]
    attention = A.attention(model, ids)
    text = build_report({"checkpoint": "random", "n_params": model.num_parameters()}, tokens,
                        attention, A.next_token(model, tok, ids), A.logit_lens(model, tok, ids),
                        A.attribute(model, tok, ids, 4, steps=4), A.surprise(model, tok, ids))
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(text, encoding="utf-8")
    return path, text, attention


def test_the_page_is_self_contained(page):
    _, text, _ = page
    # no network: nothing is loaded from anywhere (no src/href to a URL, no @import, no fetch)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "fetch(" not in text and "XMLHttpRequest" not in text
    # the hostile token text cannot close the data <script> early
    data = text.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(data.replace("<\\/", "</"))["tokens"][1] == "</script>"


def chromium_dom(url, tmp_path):
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                        "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    return p.stdout, p.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get "
                    "install -y chromium); the page's behaviour needs a browser to test")
def test_in_headless_chromium_the_attention_view_reacts_to_a_hover(page, tmp_path):
    path, _, attention = page
    dom, log = chromium_dom(path.as_uri() + "#selftest", tmp_path)
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "rror" in c or "Uncaught" in c], console
    errors = re.search(r'<pre id="errors">(.*?)</pre>', dom, re.S).group(1)
    assert errors == ""
    found = re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), "the page's scripts did not run to the end"
    result = json.loads(html.unescape(found.group(1)))
    T = attention.shape[-1]
    assert result["errors"] == [] and result["changed"] and result["hovered"] == T - 2
    # what each head shows for the hovered token is that token's row of attention weights
    # (quantised to bytes: 1/255, then printed with 3 decimals)
    shown = np.array(result["weights"])                                # (NH, T)
    expected = attention[0, :, T - 2, :]                               # layer 0, row T-2
    np.testing.assert_allclose(shown, expected, atol=1 / 255 / 2 + 5e-4)
    assert result["heatmap_cells"] == T * (T + 1) // 2                  # the causal triangle
    assert result["lens_rows"] == 1 + 3 and result["bars"] == 10


def test_report_command_writes_the_page(tmp_path, capsys):
    from tinyroots.inspect.cli import main
    tr.manual_seed(1)
    tok = tr.CharTokenizer.train(TEXT)
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=tok.vocab_size,
                                block_size=64))
    model.save_pretrained(tmp_path / "m", tokenizer=tok)
    out = tmp_path / "r.html"
    assert main(["report", "--checkpoint", str(tmp_path / "m"), "--text", TEXT, "--out",
                 str(out), "--steps", "4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["out"] == str(out) and d["tokens"] == len(TEXT)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
