"""Customer account records -> per-customer chunks (each customer is its own Weaviate tenant)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.knowledge.chunking import Chunk, chunk_id

REQUIRED_FIELDS = ("customer_id", "company", "plan", "renewal_date")
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # Weaviate's tenant-name rule


class AccountDataError(ValueError):
    """Invalid account data; the message names the file, record and field."""


@dataclass(frozen=True)
class Account:
    customer_id: str
    source: str  # file the record came from, relative to the accounts folder
    fields: tuple[tuple[str, object], ...]  # the record as given, order kept

    def get(self, key: str, default=None):
        return dict(self.fields).get(key, default)


def _records(path: Path) -> list[dict]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AccountDataError(f"{path.name}: not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise AccountDataError(f"{path.name}: expected a JSON list of account objects")
        return data
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    raise AccountDataError(f"{path.name}: unsupported account file type (use .json or .csv)")


def load_accounts(folder: Path) -> list[Account]:
    """All accounts in ``folder``; any invalid record fails the load with file/record/field named."""
    accounts: dict[str, Account] = {}
    for path in sorted(Path(folder).glob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        for index, record in enumerate(_records(path)):
            where = f"{path.name} record {index}"
            if not isinstance(record, dict):
                raise AccountDataError(f"{where}: expected an object")
            for field in REQUIRED_FIELDS:
                if not str(record.get(field) or "").strip():
                    raise AccountDataError(f"{where}: missing field '{field}'")
            customer_id = str(record["customer_id"]).strip()
            if not TENANT_PATTERN.match(customer_id):
                raise AccountDataError(
                    f"{where}: field 'customer_id'={customer_id!r} must match {TENANT_PATTERN.pattern}"
                )
            if customer_id in accounts:
                raise AccountDataError(f"{where}: duplicate customer_id {customer_id!r}")
            accounts[customer_id] = Account(customer_id, path.name, tuple(record.items()))
    return [accounts[key] for key in sorted(accounts)]


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value) or "none"
    return "none" if value in (None, "") else str(value)


OVERVIEW_SECTION = "Account overview"


def overview_fields(text: str) -> dict[str, str]:
    """The account record's scalar fields back from its overview chunk (``account_chunks`` writes one
    ``key: value`` line per field, the key's underscores as spaces): what serving reads of the account
    as the knowledge path stored it (the escalation policy's plan and renewal date)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.strip():
            fields[key.strip().replace(" ", "_")] = value.strip()
    return fields


def account_chunks(account: Account) -> list[Chunk]:
    """Three readable chunks per customer: overview, open incidents, notes (the ones present)."""
    fields = dict(account.fields)
    doc_id = f"account:{account.customer_id}"
    title = f"Account {account.customer_id} ({fields['company']})"
    incidents = fields.pop("open_incidents", None)
    notes = fields.pop("notes", None)
    overview = "\n".join(f"{key.replace('_', ' ')}: {_fmt(value)}" for key, value in fields.items())
    sections = [(OVERVIEW_SECTION, overview)]
    if incidents is not None:
        sections.append(("Open incidents", _fmt(incidents) if incidents else "No open incidents."))
    if notes:
        sections.append(("Account notes", _fmt(notes)))
    return [
        Chunk(chunk_id(doc_id, section, text, tenant=account.customer_id), doc_id, title, section, text, i)
        for i, (section, text) in enumerate(sections)
    ]
