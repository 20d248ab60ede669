"""OpenAI request checking and response shapes, without any web framework.

Every field a request may carry is checked here before any work is queued; a problem is one
APIError naming the field, the value and what was expected, sent as OpenAI's error body:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "n", "code": null}}
"""

import math

# OpenAI's own limits where it has them (stop: 4 strings, completions logprobs: 5)
MAX_STOP = 4
MAX_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20

COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed",
          "stream", "stream_options", "user", "presence_penalty", "frequency_penalty",
          "logit_bias"}
COMPLETION_FIELDS = COMMON | {"prompt", "logprobs", "echo", "best_of", "suffix", "task"}
CHAT_FIELDS = COMMON | {"messages", "logprobs", "top_logprobs", "max_completion_tokens",
                        "response_format"}


class APIError(Exception):
    """An error a client caused (or a server condition) with its HTTP status."""

    def __init__(self, message, param=None, status=400, code=None,
                 type="invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.type = (
            message, param, status, code, type)

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# ---------------------------------------------------------------------------------------------
# field checks: each returns the value (or its default) or raises APIError naming the field


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(body, name, default, low, high=None):
    v = body.get(name, default)
    if v is None:
        return default
    if not _is_int(v) or v < low or (high is not None and v > high):
        where = f">= {low}" if high is None else f"from {low} to {high}"
        raise APIError(f"'{name}' must be an integer {where}, got {v!r}", name)
    return v


def number(body, name, default, low, high, low_open=False):
    v = body.get(name, default)
    if v is None:
        return default
    if not _is_number(v) or v > high or v < low or (low_open and v == low):
        lo = "(" if low_open else "["
        raise APIError(f"'{name}' must be a number in {lo}{low}, {high}], got {v!r}", name)
    return float(v)


def boolean(body, name, default=False):
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise APIError(f"'{name}' must be true or false, got {v!r}", name)
    return v


def stop_strings(body):
    v = body.get("stop")
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) \
            or len(items) > MAX_STOP:
        raise APIError(f"'stop' must be a non-empty string or a list of up to {MAX_STOP} "
                       f"non-empty strings, got {v!r}", "stop")
    return items


def unsupported(body, known):
    """Unknown fields, and known ones whose non-default values are not implemented."""
    for key in body:
        if key not in known:
            raise APIError(f"Unrecognized request argument supplied: {key}", key)
    for key, ok in (("presence_penalty", (0, 0.0)), ("frequency_penalty", (0, 0.0)),
                    ("best_of", (1,)), ("echo", (False,)), ("suffix", ("",))):
        if body.get(key) is not None and body[key] not in ok:
            raise APIError(f"'{key}'={body[key]!r} is not supported by this server", key)
    if body.get("logit_bias") not in (None, {}):
        raise APIError("'logit_bias' is not supported by this server", "logit_bias")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise APIError("'response_format' must be {\"type\": \"text\"} on this server",
                       "response_format")
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or set(opts) - {"include_usage"}
                             or not isinstance(opts.get("include_usage", False), bool)):
        raise APIError("'stream_options' must be {\"include_usage\": true|false}",
                       "stream_options")


def sampling(body, max_n):
    """The sampling fields shared by both endpoints -> dict."""
    return {
        "temperature": number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        "top_k": integer(body, "top_k", None, 1),
        "n": integer(body, "n", 1, 1, max_n),
        "seed": integer(body, "seed", None, 0),
        "stop": stop_strings(body),
        "stream": boolean(body, "stream"),
        "include_usage": bool((body.get("stream_options") or {}).get("include_usage")),
    }


def prompts(body):
    """'prompt' -> a list of prompts, each a str or a list of token ids."""
    if "prompt" not in body:
        raise APIError("'prompt' is required", "prompt")
    v = body["prompt"]
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(_is_int(t) for t in v):
        return [v]
    if isinstance(v, list) and v and all(isinstance(p, str) or (
            isinstance(p, list) and p and all(_is_int(t) for t in p)) for p in v):
        return v
    raise APIError("'prompt' must be a string, a list of strings, a list of token ids or a "
                   f"list of such lists, got {type(v).__name__}", "prompt")


def messages(body):
    """'messages' -> [{"role", "content"}] with roles system/user/assistant."""
    v = body.get("messages")
    if not isinstance(v, list) or not v:
        raise APIError("'messages' must be a non-empty list of {role, content} objects",
                       "messages")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise APIError(f"messages[{i}] must be an object, got {type(m).__name__}",
                           f"messages[{i}]")
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant"):
            raise APIError(f"messages[{i}].role must be system, user or assistant, got "
                           f"{m.get('role')!r}", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):          # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise APIError(f"messages[{i}].content: only text parts are supported",
                               f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(f"messages[{i}].content must be a string, got "
                           f"{type(content).__name__}", f"messages[{i}].content")
        out.append({"role": role, "content": content})
    return out


def max_tokens(body, names, prompt_len, block, default):
    """The max_tokens (or max_completion_tokens) field, checked against the context."""
    value, name = default, names[0]
    for n in names:
        if body.get(n) is not None:
            value, name = integer(body, n, default, 1), n
            break
    room = block - prompt_len
    if room < 1:
        raise APIError(f"the prompt has {prompt_len} tokens; this model's context is {block} "
                       "tokens, leaving no room for a reply", "messages" if "max_completion_"
                       "tokens" in names else "prompt", code="context_length_exceeded")
    if value is None:
        return room
    if prompt_len + value > block:
        raise APIError(f"'{name}'={value} with a prompt of {prompt_len} tokens exceeds this "
                       f"model's context of {block} tokens (at most {room})", name,
                       code="context_length_exceeded")
    return value
