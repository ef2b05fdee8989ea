"""The demo's lead sheet: about 40 realistic leads, every trap included, times relative to now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DEMO_SPREADSHEET_ID = "1DemoLeadsSheetBridge0000000000000000000000"
DEMO_TAB = "Leads"
DEMO_TIME_ZONE = "Asia/Kolkata"
DEMO_PIXEL_ID = "1234567890123456"
DEMO_TOKEN = "local-demo-token"  # the fake Meta's token; never a real one

HEADER = [
    "Created At",
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "City",
    "Country",
    "Leadgen ID",
    "Event ID",
    "Source",
    "Lead Status",
    "Status Changed At",
    "Deal Value",
]

# The demo's stage map as config data (what demo-data/bridge.toml says), for tests and bench.
DEMO_STAGES: list[dict[str, Any]] = [
    {"status": ["New", "New Lead"], "event": "Lead", "value": 100},
    {"status": "MQL", "event": "QualifiedLead", "custom": True, "value": 1000},
    {"status": "SQL", "event": "Schedule", "value": 5000},
    {"status": "Opportunity", "event": "StartTrial", "value": 20000},
    {"status": ["Customer", "Won"], "event": "Purchase", "value": 50000},
    {"status": "On hold", "event": "Contact", "send": False},
    {"status": "Disqualified", "event": "Disqualified", "custom": True, "negative": True},
]

_SERIAL_EPOCH = datetime(1899, 12, 30)


@dataclass(frozen=True)
class DemoLead:
    """One lead: its state at yesterday's sync, and what the sales team did since."""

    first: str
    last: str
    email: str
    phone: object
    city: str
    country: str
    leadgen_id: object  # text, or a number (the trap)
    pixel_event_id: str
    source: str
    created_days_ago: float
    yesterday: str  # status at yesterday's sync ("" = not in the sheet yet)
    # Today's edits: (status, hours ago), in order. Several = changes between two syncs.
    edits: tuple[tuple[str, float], ...] = ()
    # Status changed this long ago, typed by hand with no sync since (e.g. before go-live).
    changed_days_ago: float | None = None
    value: object = ""
    note: str = ""
    # Imported from an old CRM export: its status cell was never stamped (day one, for real).
    stamped: bool = True


LEADS: tuple[DemoLead, ...] = (
    # Instant Form leads: leadgen ids as text, 15–17 digits.
    DemoLead(
        "Aarav",
        "Sharma",
        "aarav.sharma@gmail.com",
        "+91 98201 12345",
        "Mumbai",
        "IN",
        "120214563987456",
        "",
        "Instant Form",
        0.3,
        "",
        (("New", 6.0),),
        note="new Instant Form lead",
    ),
    DemoLead(
        "Diya",
        "Patel",
        "diya.patel@outlook.com",
        "98202 23456",
        "Ahmedabad",
        "IN",
        "1202145639874561",
        "",
        "Instant Form",
        2.5,
        "New",
        (("MQL", 20.0),),
        note="phone without country code",
    ),
    DemoLead(
        "Vivaan",
        "Reddy",
        "vivaan.reddy@yahoo.co.in",
        "09820334567",
        "Hyderabad",
        "IN",
        "12021456398745612",
        "",
        "Instant Form",
        3.0,
        "MQL",
        (("SQL", 5.0),),
        note="17-digit leadgen id",
    ),
    DemoLead(
        "Ananya",
        "Iyer",
        "ananya.iyer@gmail.com",
        "+91-98203-45678",
        "Chennai",
        "IN",
        "120214563987457",
        "",
        "Instant Form",
        4.0,
        "SQL",
        (("Opportunity", 3.0),),
    ),
    DemoLead(
        "Kabir",
        "Singh",
        "kabir.singh@rediffmail.com",
        919820456789.0,
        "Delhi",
        "IN",
        "120214563987458",
        "",
        "Instant Form",
        5.0,
        "Opportunity",
        (("Customer", 1.5),),
        value=75000,
        note="phone typed as a number; deal value from the row",
    ),
    DemoLead(
        "Isha",
        "Nair",
        "isha.nair@gmail.com",
        "+91 98204 56780",
        "Kochi",
        "IN",
        "120214563987459",
        "",
        "Instant Form",
        4.0,
        "New",
        (("Customer", 2.0),),
        note="jumped from New straight to Customer",
    ),
    DemoLead(
        "Arjun",
        "Mehta",
        "arjun.mehta@gmail.com",
        "+91 98205 67891",
        "Pune",
        "IN",
        1.20214563987456e15,
        "",
        "Instant Form",
        1.5,
        "",
        (("New", 30.0),),
        note="16-digit leadgen id typed as a number",
    ),
    DemoLead(
        "Saanvi",
        "Gupta",
        "saanvi.gupta@gmail",
        "+91 98206 78902",
        "Jaipur",
        "IN",
        "120214563987460",
        "",
        "Instant Form",
        1.0,
        "",
        (("MQL", 4.0),),
        note="bad e-mail",
    ),
    DemoLead(
        "Reyansh",
        "Kumar",
        "reyansh.kumar@gmail.com",
        "12345",
        "Lucknow",
        "IN",
        "120214563987461",
        "",
        "Instant Form",
        2.0,
        "New",
        (),
        note="bad phone, already sent yesterday",
    ),
    DemoLead(
        "Myra",
        "Joshi",
        "myra.joshi@gmail.com",
        "+91 98207 89013",
        "Nagpur",
        "IN",
        "120214563987462",
        "",
        "Instant Form",
        3.0,
        "Opportunity",
        (("SQL", 2.5),),
        note="moved backwards",
    ),
    DemoLead(
        "Advik",
        "Das",
        "advik.das@gmail.com",
        "+91 98208 90124",
        "Kolkata",
        "IN",
        "120214563987463",
        "",
        "Instant Form",
        3.5,
        "MQL",
        (("Disqualified", 6.0),),
        note="disqualified",
    ),
    DemoLead(
        "Anika",
        "Bose",
        "anika.bose@gmail.com",
        "+91 98209 01235",
        "Kolkata",
        "IN",
        "120214563987464",
        "",
        "Instant Form",
        1.2,
        "New",
        (("MQL", 9.0), ("SQL", 6.0), ("Opportunity", 2.0)),
        note="three changes between two syncs",
    ),
    # Website leads: the pixel's Lead event id is in the sheet, for deduplication.
    DemoLead(
        "Rohan",
        "Kapoor",
        "rohan.kapoor@gmail.com",
        "+91 99870 11223",
        "Mumbai",
        "IN",
        "",
        "lead.8f3a2c91",
        "Website",
        0.5,
        "",
        (("New", 11.0),),
        note="website lead, pixel event id reused",
    ),
    DemoLead(
        "Meera",
        "Pillai",
        "meera.pillai@gmail.com",
        "+91 99870 22334",
        "Bengaluru",
        "IN",
        "",
        "lead.71bd04e2",
        "Website",
        2.0,
        "New",
        (("MQL", 7.0),),
    ),
    DemoLead(
        "Emily",
        "Carter",
        "Emily.Carter@Example.com ",
        "+1 (650) 555-1212",
        "San Jose",
        "US",
        "",
        "lead.c29f1177",
        "Website",
        3.0,
        "MQL",
        (("SQL", 26.0),),
        note="US phone with country code",
    ),
    DemoLead(
        "James",
        "O'Connor",
        "james.oconnor@example.co.uk",
        "07911 123456",
        "London",
        "GB",
        "",
        "lead.5e0a3b64",
        "Website",
        2.2,
        "SQL",
        (("Opportunity", 8.0),),
        note="UK phone without country code",
    ),
    DemoLead(
        "Fatima",
        "Khan",
        "fatima.khan@gmail.com",
        "+971 50 123 4567",
        "Dubai",
        "AE",
        "",
        "lead.0d9e4f25",
        "Website",
        1.8,
        "",
        (("SQL", 12.0),),
    ),
    DemoLead(
        "Noah",
        "Williams",
        "noah.williams@example.com",
        "+61 412 345 678",
        "Sydney",
        "AU",
        "",
        "lead.a4c8e6d3",
        "Website",
        0.8,
        "",
        (("New", 18.0),),
    ),
    DemoLead(
        "Priya",
        "Menon",
        "priya.menon@gmail.com",
        "+91 99870 33445",
        "Thrissur",
        "IN",
        "",
        "",
        "Referral",
        2.0,
        "",
        (("Call back later", 3.0),),
        note="status not in the stage map",
    ),
    DemoLead(
        "Karan",
        "Malhotra",
        "karan.malhotra@gmail.com",
        "+91 99870 44556",
        "Chandigarh",
        "IN",
        "",
        "",
        "Referral",
        2.7,
        "MQL",
        (("On hold", 4.0),),
        note="known status that is never sent",
    ),
    DemoLead(
        "Sara",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "Walk-in",
        0.6,
        "",
        (("New", 5.0),),
        note="no identifier at all",
    ),
    # Changes typed more than 7 days ago with no sync since: Meta would refuse them.
    DemoLead(
        "Vihaan",
        "Chopra",
        "vihaan.chopra@gmail.com",
        "+91 99870 55667",
        "Indore",
        "IN",
        "120214563987465",
        "",
        "Instant Form",
        12.0,
        "",
        changed_days_ago=8.2,
        note="changed 8 days ago",
    ),
    DemoLead(
        "Aditi",
        "Rao",
        "aditi.rao@gmail.com",
        "+91 99870 66778",
        "Mysuru",
        "IN",
        "120214563987466",
        "",
        "Instant Form",
        15.0,
        "",
        changed_days_ago=10.0,
        note="changed 10 days ago",
    ),
    DemoLead(
        "Ishaan",
        "Verma",
        "ishaan.verma@gmail.com",
        "+91 99870 77889",
        "Bhopal",
        "IN",
        "120214563987467",
        "",
        "Instant Form",
        20.0,
        "",
        changed_days_ago=13.5,
        note="changed 13 days ago",
    ),
    # Imported from last quarter's CRM export the day sheet-bridge was installed: statuses
    # without any change time. The first sync records them as a baseline and sends nothing it
    # cannot date; their later changes are sent.
    DemoLead(
        "Kavya",
        "Menon",
        "kavya.menon@gmail.com",
        "+91 98450 11223",
        "Kochi",
        "IN",
        "120214563987468",
        "",
        "CRM import",
        60.0,
        "Customer",
        value=90000,
        stamped=False,
        note="imported customer: baseline",
    ),
    DemoLead(
        "Siddharth",
        "Rao",
        "sid.rao@outlook.com",
        "+91 98450 22334",
        "Bengaluru",
        "IN",
        "120214563987469",
        "",
        "CRM import",
        25.0,
        "SQL",
        (("Opportunity", 4.0),),
        stamped=False,
        note="imported SQL: baseline, then moves today",
    ),
    DemoLead(
        "Lakshmi",
        "Nair",
        "lakshmi.nair@yahoo.co.in",
        "+91 98450 33445",
        "Thrissur",
        "IN",
        "",
        "",
        "CRM import",
        3.0,
        "MQL",
        stamped=False,
        note="imported MQL: Lead from Created At, QualifiedLead baseline",
    ),
)

# Filler leads so the sheet looks like a week of real traffic.
_FILLER = [
    ("Tara", "Bhat", "Mangaluru", "New"), ("Yash", "Jain", "Surat", "MQL"),
    ("Nisha", "Agarwal", "Kanpur", "New"), ("Dev", "Shetty", "Udupi", "SQL"),
    ("Riya", "Saxena", "Agra", "New"), ("Om", "Kulkarni", "Nashik", "MQL"),
    ("Pooja", "Hegde", "Hubli", "New"), ("Manav", "Sinha", "Patna", "Opportunity"),
    ("Zoya", "Ali", "Srinagar", "New"), ("Neil", "Fernandes", "Panaji", "MQL"),
    ("Kiara", "Dutta", "Guwahati", "New"), ("Rahul", "Pandey", "Varanasi", "Customer"),
    ("Sneha", "Ghosh", "Durgapur", "New"), ("Aryan", "Mishra", "Ranchi", "SQL"),
    ("Lavanya", "Krishnan", "Madurai", "New"), ("Harsh", "Tiwari", "Raipur", "MQL"),
]  # fmt: skip


def all_leads() -> list[DemoLead]:
    """Every demo lead, oldest first: the order rows arrive in a real lead sheet."""
    leads = list(LEADS)
    for i, (first, last, city, status) in enumerate(_FILLER):
        leads.append(
            DemoLead(
                first,
                last,
                f"{first.lower()}.{last.lower()}{i}@gmail.com",
                f"+91 97{i:02d}0 {54321 + i * 7:05d}",
                city,
                "IN",
                f"12021456398{7500 + i:04d}",
                "",
                "Instant Form",
                0.4 + (i % 6) * 0.9,
                status if i % 3 else "New",
                () if i % 3 else ((status, 1.0 + i),),
            )
        )
    return sorted(leads, key=lambda lead: -lead.created_days_ago)


def serial(at: datetime) -> float:
    """A Sheets date-time serial number (days since 1899-12-30) for a naive local time."""
    return round((at.replace(tzinfo=None) - _SERIAL_EPOCH) / timedelta(days=1), 6)


def stamp(at: datetime) -> str:
    """What the Apps Script onEdit trigger writes: ISO 8601 with the offset."""
    return at.isoformat(timespec="seconds")


@dataclass(frozen=True)
class DemoDay:
    """Yesterday's sheet, and what happened since: edits to existing rows and new rows."""

    yesterday_rows: list[list[object]]  # header + rows, as at yesterday's sync
    edits: list[tuple[int, str, str, datetime]]  # (row, old status, new status, when)
    new_rows: list[list[object]]  # rows added since, appended after the others


def demo_day(now: datetime) -> DemoDay:
    tz = ZoneInfo(DEMO_TIME_ZONE)
    local_now = now.astimezone(tz)
    yesterday_sync = local_now - timedelta(days=1)
    rows: list[list[object]] = [list(HEADER)]
    edits: list[tuple[int, str, str, datetime]] = []
    new_rows: list[list[object]] = []
    for lead in all_leads():
        created = local_now - timedelta(days=lead.created_days_ago)
        if lead.changed_days_ago is not None:
            status = "SQL"
            changed: datetime | None = local_now - timedelta(days=lead.changed_days_ago)
        elif created <= yesterday_sync:
            status = lead.yesterday
            stamped = lead.stamped and status not in ("", "New")
            changed = created + timedelta(hours=2) if stamped else None
        else:  # arrived today: its final status, no edit history
            status = lead.edits[-1][0] if lead.edits else lead.yesterday
            hours = lead.edits[-1][1] if lead.edits else 0.0
            changed = local_now - timedelta(hours=hours) if status != "New" else None
            new_rows.append(_row(lead, created, status, changed))
            continue
        rows.append(_row(lead, created, status, changed))
        old = status
        for new, hours in lead.edits:
            edits.append((len(rows), old, new, local_now - timedelta(hours=hours)))
            old = new
    return DemoDay(rows, edits, new_rows)


def _row(lead: DemoLead, created: datetime, status: str, changed: datetime | None) -> list[object]:
    return [
        serial(created),
        lead.first,
        lead.last,
        lead.email,
        lead.phone,
        lead.city,
        lead.country,
        lead.leadgen_id,
        lead.pixel_event_id,
        lead.source,
        status,
        stamp(changed) if changed else "",
        lead.value,
    ]
