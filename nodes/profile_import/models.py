"""The profile record: field names from any source spelling, normalisation and validation.

A source row (CSV columns or JSON keys, any spelling such as ``E-mail Address``) is mapped to
the ``Profile`` fields by ``to_fields``; ``Profile`` then normalises every field and collects
*every* problem of the row at once, each with a reason code, so a quarantined row says all that
is wrong with it, and rejection reasons can be grouped.

Normalisation (documented in README):

* text fields: surrounding whitespace stripped, inner runs collapsed to one space; empty,
  ``null``, ``none``, ``n/a`` and ``-`` mean "no value";
* e-mail: ``email-validator``'s verdict and normalised form, lower-cased (see
  ``normalize_email``): the domain in its one IDNA (Unicode) form;
* phone: parsed with ``phonenumbers`` (national numbers in the configured default region),
  must be a valid number, stored as E.164; extensions are dropped;
* profile URL: canonical form ``https://host/path?query`` (scheme added or upgraded to https,
  host lower-cased without ``www.``, default port, trailing slash, fragment and tracking
  parameters such as ``utm_*`` removed, remaining query parameters sorted);
* ``updated_at`` (optional): the source's own change time (ISO 8601 or epoch seconds), used by
  the merge policy to tell newer from older rows.

Identity: the normalised e-mail, else the canonical profile URL; a row with neither is rejected.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from state.redact import is_secret_key, redact, redact_obj

TEXT_FIELDS = ("full_name", "company", "title", "location", "source")
FIELDS = ("full_name", "email", "phone", "company", "title", "location", "profile_url", "source")
MAX_TEXT = 1_000  # characters of one text field
MAX_URL = 2_048
MAX_EXTRA_BYTES = 64 * 1024  # the JSON of a row's extra fields
DEFAULT_REGION = "US"

# Reason codes of rejected rows and their labels (used for grouping, metrics and insights).
REASONS: dict[str, str] = {
    "invalid_email": "invalid e-mail",
    "invalid_phone": "invalid phone number",
    "invalid_url": "invalid profile URL",
    "invalid_timestamp": "invalid updated_at",
    "field_too_long": "field too long",
    "wrong_type": "wrong value type",
    "no_identity": "no e-mail or profile URL",
    "ragged_row": "wrong number of fields",
    "malformed_csv": "malformed CSV",
    "invalid_json": "invalid JSON",
    "not_an_object": "not a JSON object",
    "row_too_large": "row too large",
    "field_too_large": "field too large",
    "invalid_encoding": "not UTF-8",
    "unclosed_quote": "unclosed quote",
    "nul_byte": "NUL byte in row",
    "extra_too_large": "extra fields too large",
}

_EMPTY = frozenset({"", "null", "none", "n/a", "-", "--"})

# Source spellings of each field, after ``clean_key`` (lower case, words joined by "_").
ALIASES: dict[str, tuple[str, ...]] = {
    "full_name": ("full_name", "name", "fullname", "contact_name", "display_name", "contact"),
    "first_name": ("first_name", "firstname", "given_name", "first"),
    "last_name": ("last_name", "lastname", "surname", "family_name", "last"),
    "email": ("email", "e_mail", "email_address", "e_mail_address", "mail", "emailaddress",
              "work_email"),
    "phone": ("phone", "phone_number", "telephone", "tel", "mobile", "cell", "phonenumber",
              "mobile_phone", "work_phone"),
    "company": ("company", "organization", "organisation", "org", "employer", "company_name"),
    "title": ("title", "job_title", "position", "role", "jobtitle"),
    "location": ("location", "city", "address", "place"),
    "profile_url": ("profile_url", "profileurl", "url", "linkedin", "linkedin_url", "profile",
                    "profile_link"),
    "source": ("source", "lead_source"),
    "updated_at": ("updated_at", "last_updated", "modified", "modified_at", "updated",
                   "last_modified"),
    "extra": ("extra", "extras", "attributes"),
}
_FIELD_OF = {alias: field for field, aliases in ALIASES.items() for alias in aliases}
_KEY_RE = re.compile(r"[^0-9a-z]+")

# The everyday address (ASCII dot-atom, plain DNS labels without "--", a letter TLD, within
# every length limit) that email-validator always accepts unchanged but lower-cased; it skips
# the library's 30 us per call. Anything else goes to email-validator itself, and
# tests/importer/test_email_corpus.py checks that the shortcut never disagrees with it.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EVERYDAY_EMAIL = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM}){{0,31}})@(?P<domain>(?:{_LABEL}\.){{1,8}}[a-z]{{2,63}})",
    re.IGNORECASE)
# The common case (no query, port, user or fragment) skips urlsplit: same result, 8x faster.
_SIMPLE_URL = re.compile(r"(?:https?://)?(?:www\.)?((?:[a-z0-9-]+\.)+[a-z]{2,63})(/[^?#:@%\s]*)?",
                         re.IGNORECASE)
_TRACKING = frozenset({"trk", "trkinfo", "ref", "refid", "fbclid", "gclid", "mc_cid", "mc_eid",
                       "originalsubdomain", "lipi", "li_fat_id"})


@lru_cache(maxsize=4096)
def clean_key(key: str) -> str:
    """``" E-mail Address "`` -> ``"e_mail_address"``: one spelling for every source key."""
    return _KEY_RE.sub("_", key.strip().lower()).strip("_")


@lru_cache(maxsize=4096)
def field_of(key: str) -> str | None:
    """The Profile field a source key maps to (``None``: it goes to ``extra``)."""
    return _FIELD_OF.get(clean_key(key))


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is str:
        return len(value) < 8 and value.strip().lower() in _EMPTY
    return False


_FIELD_CACHE: dict[Any, str | None] = {}
SECRET_COLUMN = "\0secret"  # a column whose header looks like a credential: dropped


def to_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Map one source row (any key spelling) to Profile input; unknown keys go to ``extra``.

    A second column for a field that already has a value is kept in ``extra`` rather than
    silently dropped; ``first_name`` + ``last_name`` make ``full_name`` when it is missing.
    """
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        try:
            field = _FIELD_CACHE[key]
        except KeyError:
            field = field_of(key) if isinstance(key, str) else None
            if isinstance(key, str) and (is_secret_key(key) or redact(key) != key):
                field = SECRET_COLUMN  # api_key, password, token...: never stored
            if len(_FIELD_CACHE) < 10_000:
                _FIELD_CACHE[key] = field
        if field is SECRET_COLUMN:
            continue
        if field is None:
            if not _is_empty(value):
                extra[clean_key(str(key)) or "column"] = value
        elif field == "extra":
            _merge_extra(extra, value)
        elif field in out and not _is_empty(out[field]):
            if not _is_empty(value):
                extra[clean_key(key)] = value
        else:
            out[field] = value
    if "first_name" in out or "last_name" in out:
        first, last = out.pop("first_name", None), out.pop("last_name", None)
        if _is_empty(out.get("full_name")):
            parts = [p for p in (first, last) if isinstance(p, str) and not _is_empty(p)]
            if parts:
                out["full_name"] = " ".join(parts)
        else:
            for name, value in (("first_name", first), ("last_name", last)):
                if not _is_empty(value):
                    extra[name] = value
    if extra:
        out["extra"] = extra
    return out


def quarantine_text(data: Mapping[str, Any], raw: str) -> str:
    """What is kept of a rejected row: its raw text, unless a column named like a secret has a
    value (its cell is not recognisable in the raw line): then the row as JSON with that value
    hidden. The store redacts credential shapes in either."""
    if not any(isinstance(k, str) and is_secret_key(k) and not _is_empty(v)
               for k, v in data.items()):
        return raw
    return orjson.dumps(redact_obj(dict(data)), default=str).decode()


def _merge_extra(extra: dict[str, Any], value: Any) -> None:
    """An ``extra`` column: a JSON object (or its text) merged key by key."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(value)
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not _is_empty(v):
                extra[str(k)] = v
    elif not _is_empty(value):
        extra["extra"] = value


def _text(value: Any, field: str, limit: int = MAX_TEXT) -> str | None:
    """Whitespace-normalised text, None for "no value"; numbers are accepted as text."""
    if type(value) is str:
        text = " ".join(value.split())
    elif value is None:
        return None
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("wrong_type", "{field} must be text, got {kind}",
                                  {"field": field, "kind": type(value).__name__})
    elif isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("wrong_type", "{field} must be text, got {value}",
                                  {"field": field, "value": repr(value)})
    else:
        text = " ".join(str(value).split())
    if len(text) < 5 and text.lower() in _EMPTY:
        return None
    if len(text) > limit:
        raise PydanticCustomError("field_too_long", "{field} is longer than {limit} characters",
                                  {"field": field, "limit": limit})
    return text


def _shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _special_use(domain: str) -> bool:
    from email_validator import SPECIAL_USE_DOMAIN_NAMES  # the library's list, read live

    return any(domain == d or domain.endswith("." + d) for d in SPECIAL_USE_DOMAIN_NAMES)


def normalize_email(value: str, *, test_domains: bool = False) -> str:
    """The identity form of an e-mail address, or ValueError saying what is wrong.

    One rule: ``email-validator``'s verdict (``check_deliverability=False``, ``strict=True``:
    at most 64 characters before the @; no quoted local parts, display names or IP literals;
    special-use and reserved domains such as ``.invalid``, ``.localhost``, ``.onion``,
    ``.arpa`` and ``.test`` refused; ``test_domains=True`` accepts ``.test``, the library's
    ``test_environment``) and its normalised form (NFC; the domain through IDNA, given in its
    Unicode form, so ``jeff@xn--fiqq24b10vi0d.tw`` and ``jeff@臺網中心.tw`` are one address),
    lower-cased. Surrounding whitespace and a ``mailto:`` prefix are cell clutter, removed first.
    """
    email = value.strip()
    if email[:7].lower() == "mailto:":
        email = email[7:]
    everyday = _EVERYDAY_EMAIL.fullmatch(email)
    if everyday is not None and "--" not in everyday["domain"] and len(email) <= 254 \
            and len(everyday["local"]) <= 64:
        lowered = email.lower()
        if not _special_use(lowered[everyday.start("domain"):]):
            return lowered
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(email, check_deliverability=False, strict=True,
                                 test_environment=test_domains)
    except EmailNotValidError as exc:
        raise ValueError(f"invalid e-mail {_shown(value)}: {exc}") from None
    return checked.normalized.lower()


# NANP numbers in the usual spellings ("(415) 555-0132", "+1 415.555.0132", "1-415-555-0132"):
# these parse to exactly country code 1 + the ten digits, so the fast path builds that number
# directly and only asks phonenumbers whether it is valid (3x faster than parse + validate).
_NANP = re.compile(r"(?:\+?1[ .-]?)?\(?([2-9]\d{2})\)?[ .-]?(\d{3})[ .-]?(\d{4})")
_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ()))


_TYPE_DESCS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
               "uan", "voicemail", "fixed_line", "mobile")
_Desc = tuple[frozenset[int], re.Pattern[str]]


@cache
def _region_patterns(region: str) -> tuple[int | None, _Desc | None, tuple[_Desc, ...]] | None:
    """A region's number patterns, compiled once: phonenumbers looks them up on every call."""
    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return None

    def desc(d: Any) -> _Desc | None:
        if d is None or not d.national_number_pattern:
            return None
        return frozenset(d.possible_length), re.compile(d.national_number_pattern)

    types = tuple(x for x in (desc(getattr(meta, f)) for f in _TYPE_DESCS) if x is not None)
    return meta.country_code, desc(meta.general_desc), types


def _matches(nsn: str, desc: _Desc) -> bool:
    lengths, pattern = desc
    return (not lengths or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


def _valid_in_region(nsn: str, country_code: int, region: str) -> bool:
    """``is_valid_number_for_region`` for a national significant number: it matches the
    region's general pattern and the pattern of some number type (same test, same metadata)."""
    patterns = _region_patterns(region)
    if patterns is None or patterns[0] != country_code or patterns[1] is None:
        return False
    return _matches(nsn, patterns[1]) and any(_matches(nsn, d) for d in patterns[2])


def _valid(number: phonenumbers.PhoneNumber, region: str) -> bool:
    # valid for the default region implies valid; the general check only for the rest
    return phonenumbers.is_valid_number_for_region(number, region) \
        or phonenumbers.is_valid_number(number)


@lru_cache(maxsize=65_536)
def normalize_phone(value: str, region: str = DEFAULT_REGION) -> str:
    """E.164 form of a valid phone number; ValueError for anything else."""
    nanp = _NANP.fullmatch(value) if region in _NANP_REGIONS or value.startswith("+1") \
        else None
    if nanp is not None:
        digits = "".join(nanp.groups())
        if _valid_in_region(digits, 1, region):
            return f"+1{digits}"
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int(digits))
    else:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            raise ValueError(f"invalid phone number {_shown(value)}") from None
    if not _valid(number, region):
        raise ValueError(f"invalid phone number {_shown(value)}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def canonical_url(value: str) -> str:
    """Canonical https form of a profile URL, so spellings of one URL share an identity."""
    url = value.strip()
    simple = _SIMPLE_URL.fullmatch(url)
    if simple is not None and simple[1][0] != "-":
        path = simple[2] or ""
        if "//" in path:
            path = re.sub(r"/{2,}", "/", path)
        return f"https://{simple[1].lower()}{path.rstrip('/')}"
    if any(c.isspace() for c in url) or len(url) > MAX_URL:
        raise ValueError(f"invalid profile URL {_shown(value)}")
    if "://" not in url:
        url = "https://" + url.lstrip("/")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"invalid profile URL {_shown(value)}") from None
    if parts.scheme.lower() not in ("http", "https") or not host or "." not in host \
            or host.startswith(".") or host.endswith("."):
        raise ValueError(f"invalid profile URL {_shown(value)}")
    if host.startswith("www."):
        host = host[4:]
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    path = re.sub(r"/{2,}", "/", parts.path).rstrip("/")
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                   if not k.lower().startswith("utm_") and k.lower() not in _TRACKING)
    return urlunsplit(("https", netloc, path, urlencode(query), ""))


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from ISO 8601 text or a number; naive times are taken as UTC."""
    if isinstance(value, bool):
        raise ValueError(f"invalid updated_at {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    else:
        text = str(value).strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"invalid updated_at {_shown(text)}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ts = parsed.timestamp()
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"invalid updated_at {value!r}")
    return ts


class Profile(BaseModel):
    """One person, normalised; ``identity`` names the record it merges into."""

    model_config = ConfigDict(extra="forbid", validate_default=False)

    full_name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    title: str | None = None
    location: str | None = None
    profile_url: str | None = None
    source: str | None = None
    updated_at: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator(*TEXT_FIELDS, mode="before")
    @classmethod
    def _clean_text(cls, value: Any, info: ValidationInfo) -> str | None:
        return _text(value, info.field_name or "field")

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any, info: ValidationInfo) -> str | None:
        text = _text(value, "email", 320)
        if text is None:
            return None
        try:
            return normalize_email(text, test_domains=bool(
                (info.context or {}).get("test_domains")))
        except ValueError as exc:
            raise PydanticCustomError("invalid_email", str(exc)) from None

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: Any, info: ValidationInfo) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        text = _text(value, "phone", 64)
        if text is None:
            return None
        region = (info.context or {}).get("region", DEFAULT_REGION)
        try:
            return normalize_phone(text, region)
        except ValueError as exc:
            raise PydanticCustomError("invalid_phone", str(exc)) from None

    @field_validator("profile_url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> str | None:
        text = _text(value, "profile_url", MAX_URL)
        if text is None:
            return None
        try:
            return canonical_url(text)
        except ValueError as exc:
            raise PydanticCustomError("invalid_url", str(exc)) from None

    @field_validator("updated_at", mode="before")
    @classmethod
    def _updated(cls, value: Any) -> float | None:
        if _is_empty(value):
            return None
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise PydanticCustomError("invalid_timestamp", str(exc)) from None

    @field_validator("extra", mode="before")
    @classmethod
    def _extra(cls, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise PydanticCustomError("wrong_type", "extra must be an object")
        try:
            blob = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise PydanticCustomError("wrong_type", "extra is not JSON: {e}",
                                      {"e": str(exc)}) from None
        if len(blob) > MAX_EXTRA_BYTES:
            raise PydanticCustomError("extra_too_large", "extra fields are larger than {n} bytes",
                                      {"n": MAX_EXTRA_BYTES})
        return redact_obj(dict(value))  # free-form columns: secrets redacted, keys and values

    @model_validator(mode="after")
    def _identity(self) -> Profile:
        if self.email is None and self.profile_url is None:
            raise PydanticCustomError(
                "no_identity", "no identity: the row has neither an e-mail nor a profile URL")
        return self

    @property
    def identity(self) -> str:
        """``email:<address>`` or, without an e-mail, ``url:<canonical profile URL>``."""
        return f"email:{self.email}" if self.email is not None else f"url:{self.profile_url}"


Reason = tuple[str, str]  # (code, message)


def validate_row(data: Mapping[str, Any], region: str = DEFAULT_REGION, *,
                 test_domains: bool = False) -> tuple[Profile | None, list[Reason]]:
    """A normalised Profile, or every reason the row is rejected (never both, never raises).
    ``test_domains`` accepts e-mail addresses at ``.test`` domains (see ``normalize_email``)."""
    try:
        return Profile.model_validate(to_fields(data), context={
            "region": region, "test_domains": test_domains}), []
    except ValidationError as exc:
        reasons = []
        for err in exc.errors(include_url=False, include_context=False, include_input=False):
            code = err["type"] if err["type"] in REASONS else "wrong_type"
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if code == "wrong_type" and where and where not in msg:
                msg = f"{where}: {msg}"
            reasons.append((code, msg))
        return None, reasons
