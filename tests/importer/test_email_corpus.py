"""One e-mail rule: email-validator's verdict and normalised form, one identity per mailbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.profile_import.models import normalize_email
from nodes.profile_import.store import ProfileStore, profiles_location
from state.backends.migrations import PROFILES
from tests.importer.email_corpus import INVALID, VALID
from tests.importer.helpers import run_import, store_of, write_csv


def reference(address: str) -> str | None:
    """email-validator itself, with the importer's settings."""
    try:
        return validate_email(address, check_deliverability=False,
                              strict=True).normalized.lower()
    except EmailNotValidError:
        return None


def test_the_corpus_is_large_and_in_line_with_email_validator() -> None:
    assert len(VALID) + len(INVALID) >= 150
    assert len({a for a, _ in VALID} | set(INVALID)) == len(VALID) + len(INVALID)
    # the expectations are email-validator's own answers (guards the corpus and the library)
    assert [a for a, want in VALID if reference(a) != want] == []
    assert [a for a in INVALID if reference(a) is not None] == []


@pytest.mark.parametrize("address, identity", VALID)
def test_valid_addresses_get_one_normalised_form(address: str, identity: str) -> None:
    assert normalize_email(address) == identity


@pytest.mark.parametrize("address", INVALID)
def test_invalid_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="invalid e-mail"):
        normalize_email(address)


ASCII = st.text(alphabet="abcXYZ019.-_+'@!%", min_size=1, max_size=30)
DOMAINS = st.sampled_from(["example.com", "EXAMPLE.org", "x.test", "a.invalid", "b.onion",
                           "sub.localhost", "q.local", "z.arpa", "xn--p1ai", "a.xn--p1ai",
                           "g--a.com", "yy--b.com", "a-.com", "-a.com", "a..b", "com", "a.b1",
                           "a.c", "x.museum"])


@settings(max_examples=400, deadline=None)
@given(local=ASCII, domain=DOMAINS)
def test_the_everyday_shortcut_never_disagrees_with_email_validator(
        local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    try:
        ours: str | None = normalize_email(address)
    except ValueError:
        ours = None
    assert ours == reference(address)


def test_test_domains_are_accepted_only_when_configured() -> None:
    with pytest.raises(ValueError, match="special-use or reserved"):
        normalize_email("qa@staging.test")
    assert normalize_email("qa@staging.test", test_domains=True) == "qa@staging.test"
    with pytest.raises(ValueError, match="special-use or reserved"):
        normalize_email("qa@staging.invalid", test_domains=True)  # only .test is configurable


async def test_unicode_and_punycode_spellings_are_one_profile(tmp_path: Path,
                                                              db_url: str) -> None:
    path = write_csv(tmp_path / "idn.csv", [["Jeff", "jeff@xn--fiqq24b10vi0d.tw"],
                                            ["Jeff Huang", "jeff@臺網中心.tw"],
                                            ["Ivan", "ivan@example.xn--p1ai"],
                                            ["QA", "qa@example.test"]],
                     header=["full_name", "email"])
    report = await run_import(path, db_url)
    assert (report["read"], report["inserted"], report["updated"], report["rejected"]) == \
        (4, 2, 1, 1)
    assert report["reasons"] == {"invalid_email": 1}
    with store_of(db_url) as store:
        jeff = store.profile("email:jeff@臺網中心.tw")
        assert store.profile("email:ivan@example.рф") is not None
    assert jeff is not None and jeff["full_name"] == "Jeff Huang"


def _downgrade(location: str) -> sqlite3.Connection:
    """A SQLite profiles database as the release before the IDNA identity left it."""
    conn = sqlite3.connect(location, isolation_level=None)
    rekey = next(v for v, m in enumerate(PROFILES.of("sqlite"), start=1) if m.data)
    conn.execute("DELETE FROM bga_profile_migrations WHERE version >= ?", (rekey,))
    return conn


def test_profiles_keyed_by_the_old_punycode_form_are_rekeyed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    location = profiles_location(url)
    ProfileStore.open(location).close()
    conn = _downgrade(location)
    cols = "identity, email, full_name, company, title, extra, created_at, updated_at"
    conn.executemany(f"INSERT INTO profiles ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        # one person under both keys: the old ASCII path kept punycode, the IDN path Unicode
        ("email:jeff@xn--fiqq24b10vi0d.tw", "jeff@xn--fiqq24b10vi0d.tw", "Jeff", "TWNIC",
         None, '{"a": 1}', 1.0, 1.0),
        ("email:jeff@臺網中心.tw", "jeff@臺網中心.tw", None, None, "CTO", '{"b": 2}', 2.0, 2.0),
        # only the old key: it moves
        ("email:ivan@example.xn--p1ai", "ivan@example.xn--p1ai", "Ivan", None, None, "{}",
         3.0, 3.0),
        ("email:ada@example.com", "ada@example.com", "Ada", None, None, "{}", 4.0, 4.0),
    ])
    conn.close()
    store = ProfileStore.open(location)  # runs the rekeying migration
    try:
        assert store.count_profiles() == 3
        jeff = store.profile("email:jeff@臺網中心.tw")
        ivan = store.profile("email:ivan@example.рф")
        assert store.profile("email:jeff@xn--fiqq24b10vi0d.tw") is None
        assert store.profile("email:ada@example.com") is not None
    finally:
        store.close()
    assert jeff is not None and ivan is not None
    # the later profile applied to the earlier one with the merge policy: nothing lost
    assert (jeff["full_name"], jeff["company"], jeff["title"]) == ("Jeff", "TWNIC", "CTO")
    assert jeff["extra"] == {"a": 1, "b": 2} and jeff["email"] == "jeff@臺網中心.tw"
    assert ivan["email"] == "ivan@example.рф" and ivan["full_name"] == "Ivan"
