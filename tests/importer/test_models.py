"""Normalisation and validation of one row: e-mail, phone (E.164), URL, whitespace, reasons."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.profile_import.models import (
    canonical_url,
    normalize_email,
    normalize_phone,
    to_fields,
    validate_row,
)


@pytest.mark.parametrize("raw, expected", [
    ("Jane.Doe@Example.COM", "jane.doe@example.com"),
    ("  mailto:bob+tag@sub.example.co.uk ", "bob+tag@sub.example.co.uk"),
    ("ÅSA@Exämple.de", "åsa@exämple.de"),  # internationalised: checked by email-validator
])
def test_emails_are_lower_cased(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["jane@", "@example.com", "a@@b.com", "a b@example.com",
                                 "carol@example", "dave@exa mple.com", "x@example..com",
                                 ".x@example.com", "x.@example.com", f"{'a' * 65}@example.com",
                                 "åsa@", "plainaddress"])
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid e-mail"):
        normalize_email(raw)


@pytest.mark.parametrize("raw, region, expected", [
    ("(415) 555-0132", "US", "+14155550132"),
    ("415.555.0132", "US", "+14155550132"),
    ("1-415-555-0132", "US", "+14155550132"),
    ("+1 415 555 0132 ext. 12", "US", "+14155550132"),
    ("+44 20 7946 0958", "US", "+442079460958"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+1 (415) 555-0132", "GB", "+14155550132"),  # +1 outside the NANP regions
])
def test_phones_become_e164(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["12", "555-0000", "+1 (000) 000-0000", "call me", "020 7946"])
def test_bad_phones_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid phone number"):
        normalize_phone(raw, "US")


def _reference(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@settings(max_examples=400, deadline=None)
@given(area=st.integers(0, 999), exchange=st.integers(0, 999), line=st.integers(0, 9999),
       style=st.sampled_from(["({a}) {b}-{c}", "{a}.{b}.{c}", "+1 {a} {b} {c}", "1-{a}-{b}-{c}",
                              "{a}{b}{c}", "+1{a}{b}{c}", "{a}-{b}-{c}", "1 ({a}) {b}-{c}"]),
       region=st.sampled_from(["US", "CA", "GB", "DE"]))
def test_nanp_fast_path_agrees_with_phonenumbers(area: int, exchange: int, line: int, style: str,
                                                 region: str) -> None:
    raw = style.format(a=f"{area:03d}", b=f"{exchange:03d}", c=f"{line:04d}")
    try:
        ours: str | None = normalize_phone.__wrapped__(raw, region)
    except ValueError:
        ours = None
    assert ours == _reference(raw, region)


@pytest.mark.parametrize("raw, expected", [
    ("http://www.LinkedIn.com/in/JaneDoe/", "https://linkedin.com/in/JaneDoe"),
    ("linkedin.com/in/jane//doe", "https://linkedin.com/in/jane/doe"),
    ("https://linkedin.com/in/x?utm_source=a&b=2&a=1&trk=z#top", "https://linkedin.com/in/x?a=1&b=2"),
    ("HTTPS://WWW.EXAMPLE.COM:443/a", "https://example.com/a"),
    ("https://example.com:8443/a/", "https://example.com:8443/a"),
])
def test_profile_urls_get_one_canonical_form(raw: str, expected: str) -> None:
    assert canonical_url(raw) == expected


@pytest.mark.parametrize("raw", ["ftp://example.com/x", "https://localhost/x", "not a url",
                                 "https://exa mple.com", "https://-bad-.com:99999/x"])
def test_bad_urls_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid profile URL"):
        canonical_url(raw)


def test_column_spellings_map_to_fields_and_the_rest_to_extra() -> None:
    fields = to_fields({" E-mail Address ": "a@example.com", "Job Title": "CTO",
                        "First Name": "Ada", "last_name": "Lovelace", "Favourite Tea": "Earl Grey",
                        "Empty": "  ", "email": "second@example.com"})
    assert fields["email"] == "a@example.com"
    assert fields["title"] == "CTO"
    assert fields["full_name"] == "Ada Lovelace"
    assert fields["extra"] == {"favourite_tea": "Earl Grey", "email": "second@example.com"}


def test_a_row_is_normalised_or_rejected_with_every_reason() -> None:
    profile, reasons = validate_row({"Name": "  Ada \t Lovelace ", "email": "ADA@EXAMPLE.COM",
                                     "phone": "n/a", "company": "null",
                                     "extra": '{"score": 7}'})
    assert reasons == [] and profile is not None
    assert (profile.full_name, profile.email, profile.phone, profile.company) == (
        "Ada Lovelace", "ada@example.com", None, None)
    assert profile.extra == {"score": 7} and profile.identity == "email:ada@example.com"

    profile, reasons = validate_row({"email": "bad@", "phone": "12", "profile_url": "nope",
                                     "updated_at": "yesterday", "company": {"a": 1}})
    assert profile is None
    assert sorted(code for code, _ in reasons) == [
        "invalid_email", "invalid_phone", "invalid_timestamp", "invalid_url", "wrong_type"]

    profile, reasons = validate_row({"name": "Nobody", "phone": "+1 415 555 0132"})
    assert profile is None and [c for c, _ in reasons] == ["no_identity"]


def test_profile_url_is_the_identity_without_an_email() -> None:
    profile, _ = validate_row({"url": "www.linkedin.com/in/ada/"})
    assert profile is not None and profile.identity == "url:https://linkedin.com/in/ada"


@pytest.mark.parametrize("value, expected", [
    ("2024-01-02T03:04:05Z", 1704164645.0),
    ("2024-01-02 03:04:05", 1704164645.0),  # naive: UTC
    (1704164645, 1704164645.0),
    ("1704164645.5", 1704164645.5),
])
def test_updated_at_accepts_iso_and_epoch(value: object, expected: float) -> None:
    profile, reasons = validate_row({"email": "a@example.com", "updated_at": value})
    assert reasons == [] and profile is not None and profile.updated_at == expected
