"""PII redaction: replace personal data and secrets by a tag the model can learn to expect.

    kind     tag            examples caught                          kept (false-positive traps)
    key      <KEY>          AKIA..., ghp_..., sk-..., eyJ...JWT,     plain words and numbers,
                            -----BEGIN PRIVATE KEY-----, 32+ hex,    short hex like ff00aa
                            api_key = "..." / password: ...
    email    <EMAIL>        jane.doe+tag@mail.example.org            "@handles", a@b
    ip       <IP_ADDRESS>   192.168.0.1, 2001:db8::8a2e:370:7334,    version 1.2.3, 1.2.3.4.5,
                            fe80::1                                  12:30:45, C++ std::vector
    phone    <PHONE>        +1 (555) 123-4567, 555-123-4567,         dates 2023-01-15, plain
                            (555) 123 4567, +44 20 7946 0958,        numbers 5551234567, 3.14159,
                            13812345678 (China), 0912-345-678        French thousands 1 234 567
                            (Taiwan), 06 12 34 56 78 (France), 030 12345678 (Germany),
                            98765 43210 (India), 050 123 4567 (Gulf)

Addresses and numbers are found in any language's text, glued to Chinese characters included
("联系电话13812345678" -> "联系电话<PHONE>"); the patterns read ASCII only (re.ASCII).

Keys go first (a JWT or a private key must not be half-eaten by the other patterns), then
e-mail addresses, IPs, and phone numbers last (their digits overlap with everything else).
Candidates that only look plausible are checked by code: IP addresses with ``ipaddress``, phone
numbers by their digit count.
"""

import ipaddress
import re
import string

TAGS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "key": "<KEY>"}

# --------------------------------------------------------------------------------------------
# secrets

# (needles, pattern): the regex runs only when one of the needles (bytes) is in the text;
# Python's re costs ~10 ns a character even when nothing matches, `in` almost nothing.
_KEY_PATTERNS = [
    # JSON Web Tokens: a base64url '{"' always starts eyJ; header, payload, signature
    ((b"eyJ",), r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # AWS access key ids
    ((b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA"),
     r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[0-9A-Z]{16}\b"),
    # GitHub, Slack, Google, Stripe, OpenAI-style and Hugging Face tokens
    ((b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    ((b"github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{30,}\b"),
    ((b"xox",), r"\bxox[abposr]-[A-Za-z0-9-]{15,}\b"),
    ((b"AIza",), r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ((b"_live_", b"_test_"), r"\b(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b"),
    ((b"sk-",), r"\bsk-[A-Za-z0-9_-]{20,}\b"),
    ((b"hf_",), r"\bhf_[A-Za-z0-9]{30,}\b"),
]
# subtle: re.ASCII everywhere in this file. Without it \\w and \\b count Chinese, Arabic or
# Hindi letters as word characters, so an address or a number written straight after a Chinese
# character ("请发邮件至wang@example.cn") would never match, and a Chinese sentence after
# "token:" would look like one long secret.
_KEY_RES = [(needles, re.compile(p, re.ASCII)) for needles, p in _KEY_PATTERNS]
# PEM private keys: the whole block
_PEM_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----")
# Long hex strings: hashes of secrets, keys in hex (32+ hex digits, with a digit and a letter).
_HEX_RE = re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{32,}\b",
                     re.ASCII)
_HEX_MAP = bytes(ord("h") if chr(i) in string.hexdigits else ord(" ") for i in range(256))
_TOKEN_MAP = bytes(ord("t") if chr(i) in string.ascii_letters + string.digits + "_.-" else 32
                   for i in range(256))
_HEX_COLON_MAP = bytes(ord("h") if chr(i) in string.hexdigits else (i if i == ord(":") else 32)
                       for i in range(256))
_DIGIT_MAP = bytes(ord("d") if chr(i) in string.digits else (i if i in b".:" else ord(" "))
                   for i in range(256))
# "password = hunter2secret", "api_key: '...'", "AWS_SECRET_ACCESS_KEY=...": keep the name,
# redact the value: 8+ printable ASCII characters without spaces or quotes, with a letter and a
# digit in them (so that "the secret: remembrance", "tokens: 1,000,000,000" and a Chinese
# sentence after "token：" in prose stay).
_ASSIGNED_SECRET_RE = re.compile(
    r"(?i)(?<![a-z0-9])((?:api[_-]?key|secret|token|passw(?:or)?d|pwd|access[_-]?key|"
    r"private[_-]?key|auth)[a-z0-9_-]*[\"']?[ \t]*[:=][ \t]*[\"']?)([!#-&(-;=?-~]{8,})",
    re.ASCII)
_SECRET_NAMES = (b"key", b"secret", b"token", b"passw", b"pwd", b"auth")
_SECRET_GUARD_RE = re.compile(rb"(?:key|secret|token|passw|pwd|auth)[a-z0-9_-]*[\"']?[ \t]*[:=]")


def _assigned_secret(match):
    value = match.group(2)
    secret = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    return match.group(1) + TAGS["key"] if secret else match.group(0)


# --------------------------------------------------------------------------------------------
# e-mail

_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![A-Za-z0-9-])", re.ASCII)

# --------------------------------------------------------------------------------------------
# IP addresses: a loose pattern finds candidates, ipaddress decides

_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)", re.ASCII)
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|"
                      r"(?:\d{1,3}\.){3}\d{1,3})(?![\w:])", re.ASCII)


def _ipv4(match):
    try:
        ipaddress.IPv4Address(match.group(0))
    except ValueError:  # 999.1.1.1, or a leading zero like 01.02.03.04 (a date, a version)
        return match.group(0)
    return TAGS["ip"]


def _ipv6(match):
    s = match.group(0)
    # subtle: "12:30:45" and "a::b" parse as IPv6 or nearly; ask for at least three groups
    # with a digit in one, or the "::" shorthand with a digit.
    groups = [g for g in s.split(":") if g]
    if not any(c.isdigit() for c in s) or (len(groups) < 3 and "::" not in s):
        return s
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return s
    return TAGS["ip"]


# --------------------------------------------------------------------------------------------
# phone numbers

_PHONE_RE = re.compile(
    r"(?<![\w+])(?:"
    # international: +CC then groups, e.g. +44 20 7946 0958, +1-555-123-4567
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}"
    r"|"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567
    r"(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|"
    # (the local formats below must not start inside a decimal: "pi 3.14159265358")
    # Chinese mobile: 1[3-9] and 9 more digits, as 13812345678 or 138 1234 5678 / 138-1234-5678
    r"(?<![.,])1[3-9]\d(?:\d{8}|[ -]\d{4}[ -]\d{4})"
    r"|"
    # Taiwan mobile: 0912-345-678, 0912 345 678
    r"(?<![.,])09\d{2}[ -]\d{3}[ -]\d{3}"
    r"|"
    # French: 01 23 45 67 89, 06.12.34.56.78 (ten digits in pairs, starting 0)
    r"(?<![.,])0[1-9](?:[ .]\d{2}){4}"
    r"|"
    # German: 030 12345678, 0170/1234567, 089-1234567 (an area code, then the number)
    r"(?<![.,])0[1-9]\d{1,3}[ /-]\d{5,8}"
    r"|"
    # India: 98765 43210 (ten digits from 6-9, in two fives)
    r"(?<![.,])[6-9]\d{4}[ -]\d{5}"
    r"|"
    # Gulf mobile: 050 123 4567, 055-123-4567 (UAE, Saudi Arabia)
    r"(?<![.,])05\d[ -]\d{3}[ -]\d{4}"
    r")(?![\w-]|\.\d)", re.ASCII)


def _phone(match):
    digits = sum(c.isdigit() for c in match.group(0))
    return TAGS["phone"] if 7 <= digits <= 15 else match.group(0)  # ITU: at most 15 digits


# --------------------------------------------------------------------------------------------
# all of it

class _Scan:
    """Cheap facts about a text, computed once, that tell which regexes can possibly match."""

    def __init__(self, text):
        self.raw = text.encode("utf-8", "surrogatepass")
        self._digits = None

    @property
    def digits(self):  # the text with every digit as 'd', '.' and ':' kept, the rest blank
        if self._digits is None:
            self._digits = self.raw.translate(_DIGIT_MAP)
        return self._digits


def redact_keys(text, scan=None):
    """Replace API keys, tokens, private keys and long hex secrets by <KEY>.

    >>> redact_keys("id AKIAIOSFODNN7EXAMPLE and password = 'hunter2hunter2'")
    "id <KEY> and password = '<KEY>'"
    """
    scan = scan or _Scan(text)
    if b"-----BEGIN" in scan.raw:
        text = _PEM_RE.sub(TAGS["key"], text)
    # Every other key format is a run of 20+ characters from [A-Za-z0-9_.-], which prose
    # rarely has (a URL, "honorificabilitudinitatibus"): without one, no regex can match.
    if b"t" * 20 in scan.raw.translate(_TOKEN_MAP):
        for needles, regex in _KEY_RES:
            if any(n in scan.raw for n in needles):
                text = regex.sub(TAGS["key"], text)
        if b"h" * 32 in scan.raw.translate(_HEX_MAP):  # a run of 32 hex digits somewhere
            text = _HEX_RE.sub(TAGS["key"], text)
    if (b"=" in scan.raw or b":" in scan.raw):
        low = scan.raw.lower()
        if any(n in low for n in _SECRET_NAMES) and _SECRET_GUARD_RE.search(low):
            text = _ASSIGNED_SECRET_RE.sub(_assigned_secret, text)
    return text


def redact_emails(text, scan=None):
    """Replace e-mail addresses by <EMAIL>.

    >>> redact_emails("write to jane.doe+news@mail.example.org, or @jane")
    'write to <EMAIL>, or @jane'
    """
    if "@" not in text:
        return text
    return _EMAIL_RE.sub(TAGS["email"], text)


def redact_ips(text, scan=None):
    """Replace IPv4 and IPv6 addresses by <IP_ADDRESS>; keep versions and times.

    >>> redact_ips("host 10.0.0.12 / fe80::1, v1.2.3, at 12:30:45")
    'host <IP_ADDRESS> / <IP_ADDRESS>, v1.2.3, at 12:30:45'
    """
    scan = scan or _Scan(text)
    if b"d.d.d.d" in scan.digits.replace(b"dd", b"d").replace(b"dd", b"d"):
        text = _IPV4_RE.sub(_ipv4, text)
    if b":" in scan.raw:
        hexes = scan.raw.translate(_HEX_COLON_MAP)  # hex digits as 'h', ':' kept, rest blank
        if b"::" in hexes or hexes.count(b"h:h") >= 2:
            text = _IPV6_RE.sub(_ipv6, text)
    return text


def redact_phones(text, scan=None):
    """Replace phone numbers by <PHONE>; keep dates and plain numbers.

    >>> redact_phones("call +1 (555) 123-4567 or 555.123.4567 before 2023-01-15")
    'call <PHONE> or <PHONE> before 2023-01-15'
    """
    scan = scan or _Scan(text)
    if scan.digits.count(b"d") < 7:  # no phone number has fewer digits
        return text
    return _PHONE_RE.sub(_phone, text)


_REDACTORS = (("key", redact_keys), ("email", redact_emails), ("ip", redact_ips),
              ("phone", redact_phones))


def redact_pii(text, kinds=("email", "ip", "phone", "key")):
    """Apply the redactors for `kinds`; returns (text, {tag: count}).

    >>> redact_pii("mail bob@example.com from 192.168.1.20")
    ('mail <EMAIL> from <IP_ADDRESS>', {'<EMAIL>': 1, '<IP_ADDRESS>': 1})
    """
    # subtle: the scan is of the original text; a redaction only removes characters a later
    # guard looks for, so a stale scan can only make a guard run a regex for nothing.
    scan = _Scan(text)
    counts = {}
    for kind, redact in _REDACTORS:
        if kind not in kinds:
            continue
        out = redact(text, scan)
        if out is not text:  # re.sub returns its input object when it changed nothing
            tag = TAGS[kind]
            found = out.count(tag) - text.count(tag)
            if found:
                counts[tag] = found
            text = out
    return text, counts
