"""tinyroots.data.pii: every pattern finds what it should and leaves the traps alone."""

import pytest

from tinyroots.data.pii import (redact_emails, redact_ips, redact_keys, redact_phones,
                                redact_pii)


@pytest.mark.parametrize("text, expected", [
    ("mail jane.doe+news@mail.example.org now", "mail <EMAIL> now"),
    ("a@b.co and X_Y-z@sub.domain.museum.", "<EMAIL> and <EMAIL>."),
])
def test_email_true_positives(text, expected):
    assert redact_emails(text) == expected


@pytest.mark.parametrize("text", [
    "follow @jane on the forum", "a@b", "user@localhost", "price: 5 @ 10.00",
    "the email field is empty",
])
def test_email_traps(text):
    assert redact_emails(text) == text


@pytest.mark.parametrize("text, expected", [
    ("host 10.0.0.12 is up", "host <IP_ADDRESS> is up"),
    ("from 192.168.1.254:8080", "from <IP_ADDRESS>:8080"),
    ("v6 2001:db8::8a2e:370:7334 here", "v6 <IP_ADDRESS> here"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "full <IP_ADDRESS>."),
    ("link-local fe80::1 and loopback ::1", "link-local <IP_ADDRESS> and loopback <IP_ADDRESS>"),
])
def test_ip_true_positives(text, expected):
    assert redact_ips(text) == expected


@pytest.mark.parametrize("text", [
    "version 1.2.3 and 1.2.3.4.5", "python 3.11.7", "v1.2.3.4", "999.1.1.1 is not an IP",
    "at 12:30:45 sharp", "std::vector<int> and a::b", "pi is 3.14159", "date 12.05.2023",
    "ratio 1:2:3", "section 4.2.1.",
])
def test_ip_traps(text):
    assert redact_ips(text) == text


@pytest.mark.parametrize("text, expected", [
    ("call +1 (555) 123-4567 now", "call <PHONE> now"),
    ("or 555-123-4567, or 555.123.4567", "or <PHONE>, or <PHONE>"),
    ("office (555) 123 4567.", "office <PHONE>."),
    ("London +44 20 7946 0958", "London <PHONE>"),
])
def test_phone_true_positives(text, expected):
    assert redact_phones(text) == expected


@pytest.mark.parametrize("text", [
    "born 2023-01-15 at noon", "the number 5551234567 alone", "pi 3.14159265358",
    "from 1999-2005", "ISBN 978-3-16-148410-0", "1,234,567 people", "in 12/05/2023",
    "room 101 and 202",
])
def test_phone_traps(text):
    assert redact_phones(text) == text


@pytest.mark.parametrize("text", [
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "xoxb-1234567890-abcdefghij",
    "AIzaSyA-1234567890abcdefghijklmnopqrstu",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "sk-proj-abcdefghijklmnopqrstuvwxyz123456",
    "hf_abcdefghijklmnopqrstuvwxyzABCDEF12",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THs",
    "deadbeefdeadbeefdeadbeefdeadbeef12345678",
])
def test_key_true_positives(text):
    assert redact_keys(f"token is {text} ok") == "token is <KEY> ok"


def test_private_key_block_and_assigned_secrets():
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbc123==\n-----END RSA PRIVATE KEY-----"
    assert redact_keys(f"key:\n{pem}\ndone") == "key:\n<KEY>\ndone"
    assert redact_keys("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") \
        == "AWS_SECRET_ACCESS_KEY=<KEY>"
    assert redact_keys('password: "hunter2hunter2"') == 'password: "<KEY>"'
    assert redact_keys("api_key = 'abc123def456'") == "api_key = '<KEY>'"


@pytest.mark.parametrize("text", [
    "the secret: remembrance forever",      # prose after a keyword: no digit, not a key
    "monkey: abc12345678",                  # 'key' inside a word
    "colour ff00aa and hash 1234abcd",      # short hex
    "honorificabilitudinitatibus",         # a very long word
    "see www.example-site.org/page",
    "0000000000000000000000000000000000000000",  # hex digits only, no letter
])
def test_key_traps(text):
    assert redact_keys(text) == text


def test_redact_pii_counts_and_kinds():
    text = "bob@example.com from 192.168.1.20, call 555-123-4567, key AKIAIOSFODNN7EXAMPLE"
    out, counts = redact_pii(text)
    assert out == "<EMAIL> from <IP_ADDRESS>, call <PHONE>, key <KEY>"
    assert counts == {"<EMAIL>": 1, "<IP_ADDRESS>": 1, "<PHONE>": 1, "<KEY>": 1}
    out, counts = redact_pii(text, kinds=("email",))
    assert out.startswith("<EMAIL> from 192.168.1.20") and counts == {"<EMAIL>": 1}
    assert redact_pii("nothing here") == ("nothing here", {})
