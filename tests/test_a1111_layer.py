"""The A1111 layer's rules on their own (no service): credentials, checkpoint names, the hires size, flags."""

from __future__ import annotations

import base64

import pytest

from codex_core.errors import UsageError
from codex_core.serve import dependencies
from codex_core.serve.a1111.checkpoints import find
from codex_core.serve.a1111.hires import target_size
from codex_core.serve.service import check_bind, parse_api_auth


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_as_basic_or_bearer():
    pairs = (("alice", "s3cret"), ("bob", "pa:ss"))
    match = dependencies.credentials_match
    assert match(basic("alice", "s3cret"), None, pairs) and match(basic("bob", "pa:ss"), None, pairs)
    assert match("bearer tok", "tok", pairs) and match("BEARER  tok ", "tok", ())  # the scheme in any case
    assert match(basic("anyone", "tok"), "tok", ())  # the token as Basic's password: A1111 clients send Basic
    for header in (basic("alice", "S3cret"), basic("carol", "s3cret"), basic("alice", ""), "Bearer s3cret",
                   "Basic !!", "Basic " + base64.b64encode(b"\xff\xfe").decode(), "Digest x", "", "tok"):
        assert not match(header, "tok", pairs), header
    assert not match("Bearer ", None, pairs)  # no token: a bearer header is never enough


def test_every_candidate_is_compared_whatever_matched(monkeypatch):
    """No early exit: the same comparisons, digests of equal length, for the first user, the last, and none."""
    calls: list[tuple[int, int]] = []
    real = dependencies._same

    def counted(given: str, secret: str) -> bool:
        calls.append((len(given), len(secret)))
        return real(given, secret)

    monkeypatch.setattr(dependencies, "_same", counted)
    pairs = (("alice", "s3cret"), ("bob", "longer password"), ("carol", "x"))
    counts = []
    for header in (basic("alice", "s3cret"), basic("carol", "x"), basic("mallory", "guess")):
        calls.clear()
        dependencies.credentials_match(header, "tok", pairs)
        counts.append(len(calls))
    assert counts == [2 * len(pairs) + 1] * 3


def test_api_auth_parses_pairs_and_counts_for_a_non_loopback_bind():
    assert parse_api_auth("alice:s3cret, bob:pa:ss") == (("alice", "s3cret"), ("bob", "pa:ss"))
    assert parse_api_auth(None) == ()
    for bad in ("alice", "alice:", ":pw", "a:b,,c:d"):
        with pytest.raises(UsageError, match="--api-auth: entry"):
            parse_api_auth(bad)
    check_bind("0.0.0.0", None, False, "alice:s3cret")  # credentials: allowed
    with pytest.raises(UsageError, match="needs --token .* or --api-auth"):
        check_bind("0.0.0.0", None, False, None)


def entry(title: str, model_name: str, filename: str, short: str | None, sha: str | None) -> dict:
    return {"title": title, "model_name": model_name, "hash": short, "sha256": sha, "filename": filename,
            "model": "tiny" if filename == "tiny" else filename}


def test_a_checkpoint_is_found_by_each_of_its_names_the_most_exact_first():
    entries = [entry("styles/dream.safetensors [0123456789]", "styles/dream", "/m/checkpoints/styles/dream.safetensors",
                     "0123456789", "0123456789" + "a" * 54),
               entry("dream", "dream", "/m/checkpoints/dream", None, None),
               entry("tiny-sd15", "tiny-sd15", "tiny", None, None)]
    for name in ("styles/dream.safetensors [0123456789]", "styles/dream", "/m/checkpoints/styles/dream.safetensors",
                 "dream.safetensors", "styles/dream.safetensors", "0123456789", "0123456789" + "a" * 54):
        assert find(name, entries) is entries[0], name
    assert find("dream", entries) is entries[1]  # a title beats a file's stem
    assert find(" tiny-sd15 ", entries) is entries[2]
    assert find("tiny", entries) is None and find("nothing", entries) is None


def test_the_hires_size_as_a1111_computes_it():
    assert target_size({"hr_scale": 2}, 512, 768) == (1024, 1536)
    assert target_size({"hr_scale": 1.5}, 512, 512) == (768, 768)
    assert target_size({"hr_resize_x": 1024}, 512, 768) == (1024, 1536)  # the other side keeps the aspect
    assert target_size({"hr_resize_y": 1024}, 512, 768) == (682, 1024)
    assert target_size({"hr_resize_x": 1024, "hr_resize_y": 1024}, 512, 768) == (1024, 1536)  # covers the box
    assert target_size({"hr_resize_x": 2048, "hr_resize_y": 1024}, 512, 512) == (2048, 2048)
