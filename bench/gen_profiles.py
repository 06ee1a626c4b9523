"""Generate large, realistic profile files for the import benchmark (Faker, streamed to disk).

    python bench/gen_profiles.py out.csv --rows 1000000 --dup-rate 0.05 --invalid-rate 0.02

Names, companies, job titles and cities come from Faker (pools drawn once, then combined, so
a million rows take seconds). E-mails are unique per person; ``--dup-rate`` of the rows repeat
an earlier person (half of them with a changed title, half identical up to formatting);
``--invalid-rate`` of the rows are broken (bad e-mail, bad phone, or no identity). Phone numbers
are valid US numbers in assorted formats. Prints the expected accounting as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path
from typing import Any

# area codes that phonenumbers accepts as valid US numbers with any 2xx-9xx exchange
AREA_CODES = (201, 202, 212, 213, 214, 215, 303, 305, 310, 312, 313, 404, 408, 412, 415, 503,
              512, 602, 617, 646, 650, 702, 713, 718, 720, 773, 801, 804, 808, 816, 818, 858,
              901, 907, 910, 917, 919, 925, 949, 971)
DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "fastmail.com", "icloud.com")
SOURCES = ("crm", "webinar", "trade-show", "newsletter", "referral")
COLUMNS = ("full_name", "email", "phone", "company", "title", "location", "profile_url",
           "source", "segment")


def pools(seed: int, size: int = 2_000) -> dict[str, list[str]]:
    """Value pools from Faker (or a small built-in set when Faker is not installed)."""
    try:
        from faker import Faker
    except ImportError:  # pragma: no cover - Faker is in the bench extra
        first = ["Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken"]
        last = ["Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov"]
        return {"first": first, "last": last, "company": ["Acme", "Globex", "Initech"],
                "job": ["Engineer", "Manager", "Analyst"], "city": ["Austin, TX", "Boston, MA"]}
    fake = Faker("en_US")
    Faker.seed(seed)
    return {
        "first": [fake.first_name() for _ in range(size)],
        "last": [fake.last_name() for _ in range(size)],
        "company": [fake.company() for _ in range(size)],
        "job": [fake.job() for _ in range(size // 4)],
        "city": [f"{fake.city()}, {fake.state_abbr()}" for _ in range(size // 2)],
    }


def phone(rng: random.Random) -> str:
    ac, ex, ln = rng.choice(AREA_CODES), rng.randint(200, 999), rng.randint(0, 9999)
    style = rng.random()
    if style < 0.4:
        return f"({ac}) {ex}-{ln:04d}"
    if style < 0.6:
        return f"{ac}.{ex}.{ln:04d}"
    if style < 0.8:
        return f"+1 {ac} {ex} {ln:04d}"
    return f"{ac}-{ex}-{ln:04d}"


def person(i: int, rng: random.Random, p: dict[str, list[str]]) -> dict[str, str]:
    first, last = rng.choice(p["first"]), rng.choice(p["last"])
    slug = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
    return {
        "full_name": f"{first} {last}",
        "email": f"{slug}.{i}@{rng.choice(DOMAINS)}",
        "phone": phone(rng),
        "company": rng.choice(p["company"]),
        "title": rng.choice(p["job"]),
        "location": rng.choice(p["city"]),
        "profile_url": (f"https://www.linkedin.com/in/{slug.replace('.', '-')}-{i}"
                        if rng.random() < 0.6 else ""),
        "source": rng.choice(SOURCES),
        "segment": rng.choice(("smb", "mid-market", "enterprise")),
    }


def broken(row: dict[str, str], rng: random.Random) -> dict[str, str]:
    kind = rng.random()
    row = dict(row)
    if kind < 0.5:
        local, domain = row["email"].split("@")
        row["email"] = rng.choice((f"{local}@", f"{local} at {domain}", f"@{domain}"))
    elif kind < 0.8:
        row["phone"] = rng.choice(("12345", "555-CALL-NOW", "+1 (000) 000-0000"))
    else:
        row["email"] = ""
        row["profile_url"] = ""
    return row


def generate(path: Path, rows: int, *, dup_rate: float = 0.05, invalid_rate: float = 0.02,
             seed: int = 7) -> dict[str, Any]:
    """Write ``rows`` rows of CSV to ``path``; returns the expected accounting."""
    rng = random.Random(seed)
    p = pools(seed)
    recent: list[dict[str, str]] = []
    expected = {"read": rows, "inserted": 0, "duplicates": 0, "rejected": 0}
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i in range(rows):
            draw = rng.random()
            if draw < invalid_rate:
                row = broken(person(i, rng, p), rng)
                expected["rejected"] += 1
            elif draw < invalid_rate + dup_rate and recent:
                row = dict(rng.choice(recent))
                if rng.random() < 0.5:
                    row["title"] = rng.choice(p["job"])
                else:
                    row["email"] = row["email"].upper()
                    row["full_name"] = f"  {row['full_name']}  "
                expected["duplicates"] += 1
            else:
                row = person(i, rng, p)
                expected["inserted"] += 1
                if len(recent) < 50_000:
                    recent.append(row)
                else:
                    recent[rng.randrange(len(recent))] = row
            writer.writerow([row[c] for c in COLUMNS])
    return expected


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path, help="CSV file (or, with --samples, a folder)")
    ap.add_argument("--samples", action="store_true",
                    help="write the small messy sample set into the folder OUTPUT")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    ap.add_argument("--invalid-rate", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if args.samples:
        json.dump(write_samples(args.output), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    expected = generate(args.output, args.rows, dup_rate=args.dup_rate,
                        invalid_rate=args.invalid_rate, seed=args.seed)
    json.dump(expected, sys.stdout)
    sys.stdout.write("\n")



# -- the sample set (samples/profiles) -------------------------------------------------------------
#
# Three files with the mess real exports have, built so that every expected outcome is known by
# construction (the numbers are in samples/profiles/README.md and tests/importer/test_samples.py).
# Imported in name order: 01_contacts.csv, 02_leads.jsonl, 03_crm_export.json.

BAD_EMAILS = ("jane.doe@", "bob at example.com", "@example.com", "alice@@example.com",
              "carol@example", "dave@exa mple.com")


def _samples_people(n: int, rng: random.Random, fake: Any, tag: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(out) < n:
        first, last = fake.first_name(), fake.last_name()
        slug = f"{first}.{last}".lower().replace("'", "")
        if slug in seen:
            continue
        seen.add(slug)
        out.append({"first": first, "last": last, "email": f"{slug}@{tag}.example.com",
                    "phone": phone(rng), "company": fake.company(), "title": fake.job(),
                    "city": f"{fake.city()}, {fake.state_abbr()}",
                    "url": f"https://www.linkedin.com/in/{slug.replace('.', '-')}"})
    return out


def write_samples(folder: Path, seed: int = 11) -> dict[str, dict[str, int]]:
    """Write the sample set; returns the expected accounting per file."""
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(seed)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    people = _samples_people(260, rng, fake, "mail")
    expected: dict[str, dict[str, int]] = {}

    # 01_contacts.csv: BOM, CRLF, "Excel" headers; 200 rows
    contacts, rows = people[:183], []
    for i, p in enumerate(contacts):
        name = f"{p['first']} {p['last']}"
        if i % 17 == 0:
            name = f"  {p['first']}   {p['last']} "  # stray whitespace
        if i in (5, 50, 150):
            name = ""  # missing names: still valid (identity is the e-mail)
        rows.append([name, p["email"], p["phone"], p["company"], p["title"], p["city"],
                     p["url"] if i % 3 else "", "trade-show"])
    bad = []
    for i, email in enumerate(BAD_EMAILS):  # 6 bad e-mails, the first also a bad phone
        p = people[200 + i]
        bad.append([f"{p['first']} {p['last']}", email, "12" if i == 0 else p["phone"],
                    p["company"], p["title"], p["city"], "", "trade-show"])
    for i, number in enumerate(("12345", "555-0000", "+1 (000) 000-0000")):  # 3 bad phones
        p = people[206 + i]
        bad.append([f"{p['first']} {p['last']}", p["email"], number, p["company"], p["title"],
                    p["city"], "", "trade-show"])
    for i in range(2):  # 2 rows with neither e-mail nor profile URL
        p = people[209 + i]
        bad.append([f"{p['first']} {p['last']}", "", p["phone"], p["company"], p["title"],
                    p["city"], "", "trade-show"])
    dups = []
    for i in range(3):  # identical after normalisation -> unchanged
        p = contacts[10 + i]
        dups.append([f" {p['first']} {p['last']}", p["email"].upper(), p["phone"], p["company"],
                     p["title"], p["city"], p["url"] if (10 + i) % 3 else "", "trade-show"])
    for i in range(2):  # a newer title -> updated
        p = contacts[20 + i]
        dups.append([f"{p['first']} {p['last']}", p["email"], p["phone"], p["company"],
                     "Head of " + p["title"].split(",")[0], p["city"],
                     p["url"] if (20 + i) % 3 else "", "trade-show"])
    all_rows = rows[:60] + bad[:5] + dups[:2] + rows[60:120] + bad[5:] + dups[2:] + rows[120:]
    with (folder / "01_contacts.csv").open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(["Full Name", "Email", "Phone", "Company", "Job Title", "City",
                         "LinkedIn", "Source"])
        for n, row in enumerate(all_rows):
            writer.writerow(row)
            if n == 90:  # the stray delimiter: an unquoted comma in the company name
                p = people[211]
                fh.write(f"{p['first']} {p['last']},{p['email']},{p['phone']},Acme, Inc,"
                         f"{p['title'].replace(',', '')},Austin TX,,trade-show\r\n")
    expected["01_contacts.csv"] = {"read": 200, "inserted": 183, "updated": 2, "unchanged": 3,
                                   "rejected": 12}

    # 02_leads.jsonl: other key spellings, extra objects, broken lines; 120 records
    leads = []
    fresh = _samples_people(93, rng, fake, "leads")
    for i, p in enumerate(fresh[:90]):
        rec: dict[str, Any] = {"name": f"{p['first']} {p['last']}", "e-mail": p["email"],
                               "mobile": p["phone"], "organization": p["company"],
                               "position": p["title"], "location": p["city"],
                               "lead_source": "webinar"}
        if i % 4 == 0:
            rec["extra"] = {"campaign": "spring-webinar", "score": 40 + i}
        leads.append(rec)
    for i in range(10):  # known people with new information -> updated
        p = contacts[30 + i]
        leads.insert(5 + i * 8, {"name": f"{p['first']} {p['last']}", "e-mail": p["email"],
                                 "organization": fake.company(), "extra": {"score": 90 + i}})
    for i in range(10):  # known people, nothing new (other spellings, missing name) -> unchanged
        p = contacts[60 + i]
        digits = "".join(c for c in p["phone"] if c.isdigit())[-10:]
        leads.insert(9 + i * 9, {"e-mail": p["email"].upper(),
                                 "mobile": f"+1 {digits[:3]}-{digits[3:6]}-{digits[6:]}",
                                 "organization": p["company"]})
    url_people = fresh[90:93]
    for p in url_people:  # no e-mail: the profile URL is the identity
        leads.append({"name": f"{p['first']} {p['last']}", "profile_url": p["url"]})
    p = url_people[0]  # the same URL spelled differently, with a title -> updated
    leads.append({"profile_url": p["url"].replace("https://www.", "http://") + "/?trk=x",
                  "title": p["title"]})
    for email in ("erin@", "frank@example..com", "grace.example.com"):  # 3 bad e-mails
        leads.append({"name": "Bad Address", "e-mail": email})
    lines = [json.dumps(r, ensure_ascii=False) for r in leads]
    lines.insert(40, '{"name": "Truncated Line", "e-mail": "trunc@example.com"')  # invalid JSON
    lines.insert(80, "{'name': 'Single Quotes', 'e-mail': 'sq@example.com'}")  # invalid JSON
    lines.insert(100, json.dumps(["not", "an", "object"]))
    (folder / "02_leads.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected["02_leads.jsonl"] = {"read": 120, "inserted": 93, "updated": 11, "unchanged": 10,
                                  "rejected": 6}

    # 03_crm_export.json: a JSON array, first/last name columns, updated_at timestamps
    crm: list[dict[str, Any]] = []
    newer = _samples_people(64, rng, fake, "crm")
    for i, p in enumerate(newer[:61]):
        crm.append({"first_name": p["first"], "last_name": p["last"], "email": p["email"],
                    "phone": p["phone"], "company": p["company"], "title": p["title"],
                    "updated_at": f"2025-0{1 + i % 9}-1{i % 10}T09:30:00Z"})
    for p in newer[61:64]:  # missing names: valid
        crm.append({"first_name": "", "last_name": None, "email": p["email"],
                    "company": p["company"]})
    for i in range(8):  # known people, newer title -> updated
        p = contacts[100 + i]
        crm.insert(3 + i * 7, {"first_name": p["first"], "last_name": p["last"],
                               "email": p["email"], "title": "VP " + p["title"].split(",")[0],
                               "updated_at": "2025-06-01T12:00:00+00:00"})
    for i in range(4):  # the same people again from an older export: nothing overwritten
        p = contacts[100 + i]
        crm.append({"first_name": p["first"], "last_name": p["last"], "email": p["email"],
                    "title": "Intern", "updated_at": "2024-01-01"})
    crm.insert(20, {"first_name": "Bad", "last_name": "Phone", "email": "bad.phone@crm.example.com",
                    "phone": "call me maybe"})
    crm.insert(40, {"first_name": "Worse", "last_name": "Phone",
                    "email": "worse.phone@crm.example.com", "phone": "+1 (123) 456-7890"})
    crm.insert(50, {"first_name": "Odd", "last_name": "Date", "email": "odd.date@crm.example.com",
                    "updated_at": "yesterday"})
    crm.insert(60, {"first_name": "No", "last_name": "Identity", "company": "Nowhere Ltd"})
    (folder / "03_crm_export.json").write_text(json.dumps(crm, indent=2, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
    expected["03_crm_export.json"] = {"read": 80, "inserted": 64, "updated": 8, "unchanged": 4,
                                      "rejected": 4}
    return expected


if __name__ == "__main__":
    main()
