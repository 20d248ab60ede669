"""The page at GET / in headless Chromium: send a chat message, watch the reply stream in.

Chromium is driven over the DevTools protocol (a websocket), the way Playwright and Puppeteer
do it, with nothing but the `websockets` package. Skipped, with the reason, where Debian's
`chromium` is not installed (CI installs it: apt-get install -y chromium).
"""

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time

import httpx
import pytest
from serve_util import DIALOGUES, ServerProcess, make_chat_model

pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPLY = DIALOGUES[0]["messages"][1]["content"]


class DevTools:
    """The few DevTools-protocol calls the test needs, on one page target."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.events = []

    def call(self, method, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    server = ServerProcess(make_chat_model(tmp_path_factory.mktemp("page")),
                           "--model-name", "faq")
    profile = tempfile.mkdtemp(prefix="tinyroots-chromium-")
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--no-first-run", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            assert time.time() < deadline, "chromium did not start its DevTools endpoint"
            time.sleep(0.2)
        port = int(open(port_file).read().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        with ws_client.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            tools = DevTools(ws)
            tools.call("Runtime.enable")
            tools.call("Page.enable")
            tools.call("Page.navigate", url=server.url + "/")
            deadline = time.time() + 30
            while not tools.js("document.readyState === 'complete' && document."
                               "getElementById('status').textContent.includes('faq')"):
                assert time.time() < deadline, "the page did not load"
                time.sleep(0.2)
            yield tools, server
    finally:
        proc.terminate()
        proc.wait(30)
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)


def test_chat_message_streams_into_the_page(browser_page):
    tools, server = browser_page
    # the tiny model writes its whole reply in milliseconds, faster than the page reads; a slow
    # network (2 kB/s, DevTools' throttling) spreads the chunks out so the growth is visible
    tools.call("Network.enable")
    tools.call("Network.emulateNetworkConditions", offline=False, latency=0,
               downloadThroughput=2000, uploadThroughput=-1)
    # record the reply's text at every change: streamed text grows piece by piece
    tools.js("""window.snapshots = [];
        new MutationObserver(() => { const b = document.querySelector('.msg.assistant');
            if (b) window.snapshots.push(b.textContent); })
          .observe(document.getElementById('log'), {childList: true, subtree: true,
                                                    characterData: true});
        document.getElementById('temperature').value = '0';
        document.getElementById('chatinput').value = 'hello';
        document.getElementById('chatsend').click(); true""")
    deadline = time.time() + 30
    while tools.js("document.getElementById('chatsend').disabled || "
                   "!document.querySelector('.msg.assistant')"):
        assert time.time() < deadline, "no reply within 30 s"
        time.sleep(0.1)
    reply = tools.js("document.querySelector('.msg.assistant').textContent")
    snaps = [s for s in tools.js("window.snapshots") if s]
    assert reply == REPLY
    assert all(REPLY.startswith(s) for s in snaps)               # each a prefix of the reply
    # streamed: part of the reply was on the page before the rest arrived
    assert any(s != REPLY for s in snaps) and snaps[-1] == REPLY
    assert tools.js("document.querySelectorAll('.msg.assistant .tok').length") >= 3
    # the probabilities toggle: hovering a token shows its top next-token probabilities
    tools.js("document.getElementById('showprobs').click(); "
             "document.querySelector('.msg.assistant .tok')"
             ".dispatchEvent(new MouseEvent('mouseenter')); true")
    shown = tools.js("getComputedStyle(document.getElementById('probs')).display")
    rows = tools.js("document.querySelectorAll('#probs div').length")
    assert shown == "block" and rows == 5
    errors = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not errors, errors
