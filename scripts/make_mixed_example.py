"""Writes examples/mixed/: a small support inbox of every input type, with a few unusable files on purpose.

Run from the repository root: ``.venv/bin/python -m scripts.make_mixed_example`` (needs the test extras:
fpdf2 builds the PDFs). The usable files are a fictional outdoor-gear shop's customer messages, FAQ, returns
policy, incident review and chat export, so that a classifier of support topics (billing, delivery, product
fault, account, feedback) has something to learn. The unusable ones show what ingest_report.json says about
a scanned PDF, a binary file named .txt, a damaged .docx and an unsupported .csv.

Does not: run ingestion, or write anywhere but the given folder (default examples/mixed).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tests.fixtures.inputs import docx_bytes, jsonl_bytes, pdf_bytes, scanned_pdf_bytes

SUBJECTS = [
    "Tent order stuck at 'label created'",
    "Charged twice for order 48213",
    "Broken zipper on Alder jacket",
    "Password reset email never arrives",
    "Thank you for the trail runners",
    "Parcel delivered to the wrong house",
    "Invoice with VAT number",
    "Headlamp switches itself on",
    "Delete my account",
    "Size filter keeps resetting",
]
EMAILS = [
    "Hello, I ordered the Ridgeline 2 tent on the 3rd and the tracking page has said 'label created' for nine "
    "days now. Could you check whether it actually left your warehouse? I need it for a trip on the 20th.",
    "Hi team, my card was charged twice for order 48213: once for 189.00 and again for the same amount an hour "
    "later. My bank shows both as settled. Please refund the duplicate charge.",
    "The zipper on my Alder down jacket split along the bottom after two weeks of normal use. The teeth are "
    "fine, but the slider no longer closes them. Is this covered by the warranty?",
    "I can't log in to my account. The password reset email never arrives, and I've checked the spam folder. "
    "My username is the same as this email address.",
    "Just wanted to say the trail runners I bought in spring are the most comfortable shoes I've owned. Two "
    "hundred miles in and the grip is still great. Thanks for the honest sizing advice on the product page!",
    "Your courier left my parcel at the wrong address (number 14 instead of 41). The neighbours have no idea "
    "where it went. What can you do?",
    "Can I get an invoice with my company's VAT number on it? I paid by card at checkout but forgot to add the "
    "business details.",
    "The headlamp I received turns on by itself in my pack and drains the battery overnight. The lock mode in "
    "the manual doesn't seem to exist on this model.",
    "Please delete my account and all the data you hold about me. I no longer want to receive the newsletter "
    "either.",
    "The new store layout is much easier to browse, but the filter for women's sizes resets every time I open "
    "a product and go back. Small thing, but annoying.",
]

FAQ = """# Frequently asked questions

## Shipping

**How long does delivery take?** Orders placed before 2 pm on a weekday leave the warehouse the same day.
Standard delivery takes two to four working days; express takes one.

**My tracking has not updated.** Tracking can lag by up to 48 hours after the label is created. If nothing
changes after three working days, write to us with your order number and we will chase the courier.

## Payments

**Which payment methods do you accept?** Cards, PayPal and bank transfer for business accounts.

**I was charged twice.** A second charge is usually a card authorisation that drops off within five days.
If both charges have settled, send us a screenshot of your statement and we will refund the duplicate.

## Accounts

**I forgot my password.** Use "Forgot password" on the sign-in page. Reset emails come from
no-reply@example.com; add it to your contacts if they land in spam.
"""

POLICY = [
    "You may return any unused item within 60 days of delivery for a full refund to the original payment "
    "method. Items must be clean, with tags attached, in their original packaging where possible.",
    "Used items are covered by our two-year warranty against defects in materials and workmanship. Damage "
    "from accidents, wear and tear, or alterations is not covered, but we offer repairs at cost.",
    "To start a return, sign in, open the order and choose 'Return items'. We email a prepaid label within one "
    "working day. Refunds are issued within five working days of the parcel reaching us.",
    "Sale items may be returned for store credit only. Gift cards and personalised items cannot be returned.",
]

INCIDENT_REVIEW: list[str | list[list[str]]] = [
    "# Incident review: duplicate card charges, 14 May",
    "Between 09:10 and 10:45 a retry in the payment service sent some authorisations twice. 212 customers "
    "were charged twice for the same order. All duplicates were refunded by 16 May.",
    [
        ["Time", "Event", "Owner"],
        ["09:10", "Payment provider latency rises above 5 s", "Payments"],
        ["09:25", "First customer email about a double charge", "Support"],
        ["10:45", "Retry disabled; duplicates stop", "Payments"],
        ["16 May", "All 212 duplicate charges refunded", "Finance"],
    ],
    "Follow-up: make payment retries idempotent with the order number as key, and alert support when more than "
    "five billing emails arrive within ten minutes.",
]

CHATS = [
    ("Where is my order? It's been a week.", "chat", "delivery"),
    ("The buckle on my backpack hip belt snapped on the first hike.", "chat", "fault"),
    ("Do you price match other shops?", "email", "billing"),
    ("I changed my address after ordering. Can you update the delivery?", "chat", "delivery"),
    ("Loved the quick reply yesterday, the replacement arrived today. Thank you!", "chat", "feedback"),
    ("My discount code SUMMER15 says it has expired, but the email said it's valid until Sunday.", "email", "billing"),
    ("The app logs me out every time I switch to another app.", "chat", "account"),
    ("The sleeping bag is much colder than its rating. I was freezing at 5 degrees.", "email", "fault"),
    ("Can I change the email address on my account?", "chat", "account"),
    ("Parcel arrived soaked and the box was torn open.", "chat", "delivery"),
    ("Why was I charged for shipping when my order was over the free-shipping threshold?", "email", "billing"),
    ("Great stove, boils water in three minutes even in wind.", "review", "feedback"),
]

LEGACY_NOTES = (
    "Phone notes – week 12\n\n"
    "Caller asked whether the “Summit” boots run small. Advised ordering half a size up; exchange is free.\n\n"
    "Customer in Zürich: import duties of 24 € charged on delivery. Explained that orders to Switzerland ship "
    "duties-unpaid; offered a 10 € voucher as goodwill.\n\n"
    "Café owner wants 30 fleece jackets with a logo. Passed to the business sales team."
)


def example_files() -> dict[str, bytes]:
    damaged = docx_bytes(["Draft notes that were never saved properly."])
    chat_lines = jsonl_bytes(
        [{"text": t, "ticket_id": 5100 + i, "channel": c, "topic_hint": h} for i, (t, c, h) in enumerate(CHATS)]
    )
    return {
        **{
            f"support/inbox/email-{i:02d}.txt": f"From: customer{i}@example.org\nSubject: {subj}\n\n{body}\n".encode()
            for i, (subj, body) in enumerate(zip(SUBJECTS, EMAILS, strict=True), start=1)
        },
        "support/faq.md": FAQ.encode("utf-8"),
        "policies/returns-and-warranty.pdf": pdf_bytes(POLICY, title="Returns and warranty policy"),
        "reports/incident-review.docx": docx_bytes(INCIDENT_REVIEW),
        "tickets/chat-export.jsonl": chat_lines + b'{"text": "The export was cut off here, mid-rec',
        "notes/phone-notes-cp1252.txt": LEGACY_NOTES.encode("cp1252"),
        # unusable on purpose: each shows up in ingest_report.json with its reason
        "scans/signed-contract.pdf": scanned_pdf_bytes(),
        "logs/crash-dump.txt": random.Random(2024).randbytes(1500),
        "reports/draft-damaged.docx": damaged[: len(damaged) // 2],
        "exports/customers.csv": b"id,name,city\n1,Ana Ruiz,Valencia\n2,Lee Park,Busan\n",
    }


def main(folder: Path = Path("examples/mixed")) -> None:
    for key, data in example_files().items():
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {len(example_files())} files, {total} bytes, to {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/mixed"))
