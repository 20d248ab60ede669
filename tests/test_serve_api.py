"""The HTTP layer in-process (Starlette's TestClient): every 4xx, auth, text assembly."""

import asyncio
import json
import threading

import pytest
from test_finetune import make_pretrained

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from tinyroots.checkpoint import load_model_and_tokenizer  # noqa: E402
from tinyroots.serve import ServeConfig, create_app  # noqa: E402
from tinyroots.serve.api import Outbox, TextTracker  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A plain (not chat-tuned) model: context 64, served as 'tiny' with a key."""
    path = make_pretrained(tmp_path_factory.mktemp("serve_api") / "m", block_size=64)
    model, tok, _ = load_model_and_tokenizer(path)
    app = create_app(model, tok, ServeConfig(model_name="tiny", api_key="k3y", max_n=4,
                                             max_body=2000))
    with TestClient(app, headers={"Authorization": "Bearer k3y"}) as c:
        yield c


def error_of(r, status, param="unset"):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "unset":
        assert err["param"] == param, err
    return err


def test_auth(client):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "k3y"}):
        err = error_of(client.post("/v1/completions", json={"prompt": "a"}, headers=headers),
                       401)
        assert err["code"] == "invalid_api_key"
    error_of(client.get("/v1/models", headers={"Authorization": ""}), 401)
    assert client.get("/health", headers={"Authorization": ""}).json()["auth"] is True
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": "a", "temperature": "hot"}, "temperature", "number"),
    ({"prompt": "a", "temperature": 3}, "temperature", "number"),
    ({"prompt": "a", "top_p": 0}, "top_p", "(0.0, 1.0]"),
    ({"prompt": "a", "top_k": 2.5}, "top_k", "integer"),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens", "integer"),
    ({"prompt": "a", "max_tokens": True}, "max_tokens", "integer"),
    ({"prompt": "a", "max_tokens": 64}, "max_tokens", "context"),
    ({"prompt": "a " * 80}, "prompt", "context"),
    ({"prompt": "a", "n": 5}, "n", "from 1 to 4"),
    ({"prompt": "a", "n": "2"}, "n", "integer"),
    ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop", "4"),
    ({"prompt": "a", "stop": 7}, "stop", "string"),
    ({"prompt": "a", "stream": "yes"}, "stream", "true or false"),
    ({"prompt": "a", "seed": -1}, "seed", "integer"),
    ({"prompt": "a", "logprobs": 6}, "logprobs", "from 0 to 5"),
    ({"prompt": 5}, "prompt", "string"),
    ({"prompt": [1, 99999]}, "prompt", "vocabulary"),
    ({}, "prompt", "required"),
    ({"prompt": "a", "model": "gpt-4"}, "model", "does not exist"),
    ({"prompt": "a", "frobnicate": 1}, "frobnicate", "Unrecognized"),
    ({"prompt": "a", "echo": True}, "echo", "not supported"),
    ({"prompt": "a", "task": "translate"}, "task", "translation"),
])
def test_bad_completion_requests_are_400_naming_the_field(client, body, param, words):
    err = error_of(client.post("/v1/completions", json=body), 400, param)
    assert words in err["message"]


def test_bad_bodies(client):
    error_of(client.post("/v1/completions", content=b'{"prompt": '), 400)
    error_of(client.post("/v1/completions", content=b'[' * 1900), 400)   # over json's depth limit
    assert "JSON object" in error_of(client.post("/v1/completions", json=[1]), 400)["message"]
    big = json.dumps({"prompt": "a" * 3000})
    assert error_of(client.post("/v1/completions", content=big), 413)["code"] == \
        "request_too_large"
    error_of(client.get("/v1/nothing"), 404)
    error_of(client.get("/v1/completions"), 405)


def test_chat_without_a_template_is_a_clear_400(client):
    err = error_of(client.post("/v1/chat/completions",
                               json={"messages": [{"role": "user", "content": "hi"}]}),
                   400, "messages")
    assert err["code"] == "no_chat_template" and "finetune chat" in err["message"]
    for body, param in (({"messages": []}, "messages"),
                        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
                        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
                        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
                         "top_logprobs")):
        error_of(client.post("/v1/chat/completions", json=body), 400, param)


def test_completion_shapes_and_greedy_equals_generate(client):
    app_server = client.app.state.server
    r = client.post("/v1/completions", json={"prompt": "the cat", "max_tokens": 10,
                                             "temperature": 0, "logprobs": 2})
    out = r.json()
    assert r.status_code == 200 and out["object"] == "text_completion"
    choice = out["choices"][0]
    tok, model = app_server.tokenizer, app_server.model
    ids = tok.encode("the cat")
    ref = model.generate([ids], max_new_tokens=10, eos_token_id=tok.eot_token_id)
    new = [t for t in ref[0, len(ids):].tolist() if t != tok.eot_token_id]
    assert choice["text"] == tok.decode(new)
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(new)
    assert all(len(t) == 2 and max(t.values()) <= 0 for t in lp["top_logprobs"])
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(new),
                            "total_tokens": len(ids) + len(new)}


def test_text_tracker_holds_partial_characters_and_stop_prefixes():
    class Bytes:                                   # token i is the byte i
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")
    t = TextTracker(Bytes(), skip_ids=(), stops=["\n\n"])
    assert t.add(ord("H")) == "H"
    assert t.add(0xC3) == ""                       # first byte of "é": held back
    assert t.add(0xA9) == "é"
    assert t.add(ord("\n")) == ""                  # may be the start of the stop string
    assert t.add(ord("x")) == "\nx"                # it was not
    assert t.add(ord("\n")) == "" and t.add(ord("\n")) == "" and t.stopped
    assert t.text == "Hé\nx" and t.flush() == ""
    garbage = TextTracker(Bytes(), skip_ids=(), stops=[])
    assert [garbage.add(0x80) for _ in range(3)] == ["", "\ufffd", "\ufffd"]   # not held forever


def test_outbox_hands_events_over_in_order_and_outlives_a_closed_loop():
    async def deliver():
        outbox, queue = Outbox(asyncio.get_running_loop()), asyncio.Queue()
        sender = threading.Thread(target=lambda: [outbox.put(queue, i) for i in range(50)])
        sender.start()
        got = [await asyncio.wait_for(queue.get(), 5) for _ in range(50)]
        sender.join()
        return got
    assert asyncio.run(deliver()) == list(range(50))   # every event, in order, from a thread

    loop = asyncio.new_event_loop()
    loop.close()                                       # the server has gone
    outbox = Outbox(loop)
    outbox.put(asyncio.Queue(), "late")                # no error from the decoding thread ...
    assert not outbox.polling                          # ... and no poller counted as running
