"""The sandbox's deterministic CRM data: accounts and their contacts.

Timestamps are computed from FIXED_EPOCH, never from the clock, so two runs (or two machines)
serve byte-identical data. Each contact pair of an account shares one timestamp on purpose:
paging must then break ties by id, which is what a real API's data looks like after a bulk import.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

FIXED_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)
SPREAD_MINUTES = 90 * 24 * 60  # updatedAt values fall within the 90 days before FIXED_EPOCH

_PREFIXES = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay",
             "Soylent", "Tyrell", "Cyberdyne", "Wonka"]
_NOUNS = ["Labs", "Systems", "Foods", "Logistics", "Energy", "Health", "Media", "Capital",
          "Robotics", "Textiles"]
_INDUSTRIES = ["software", "manufacturing", "retail", "healthcare", "finance", "logistics",
               "energy", "media", "education"]
_FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken",
                "Frances", "John", "Radia", "Dennis", "Hedy", "Linus", "Katherine", "Tim",
                "Anita", "Guido", "Shafi", "Niklaus"]
_LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton",
               "Thompson", "Allen", "McCarthy", "Perlman", "Ritchie", "Lamarr", "Torvalds",
               "Johnson", "Berners-Lee", "Borg", "van Rossum", "Goldwasser", "Wirth"]


def format_timestamp(moment: datetime) -> str:
    """Return `moment` as RFC 3339 UTC with a `Z` suffix, to the second."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _minutes_before_epoch(index: int, multiplier: int) -> str:
    # A prime multiplier coprime with SPREAD_MINUTES scatters indexes without collisions.
    return format_timestamp(FIXED_EPOCH - timedelta(minutes=(index * multiplier) % SPREAD_MINUTES))


def build_accounts(count: int) -> list[dict]:
    """Return `count` accounts `acc_0001`... with id, name, industry, website, updatedAt."""
    accounts = []
    for index in range(1, count + 1):
        slot = index - 1
        name = f"{_PREFIXES[slot % len(_PREFIXES)]} {_NOUNS[(slot // len(_PREFIXES)) % len(_NOUNS)]}"
        cycle = slot // (len(_PREFIXES) * len(_NOUNS))
        if cycle:
            name = f"{name} {cycle + 1}"
        accounts.append({
            "id": f"acc_{index:04d}",
            "name": name,
            "industry": _INDUSTRIES[(slot * 7) % len(_INDUSTRIES)],
            "website": f"https://{name.lower().replace(' ', '-')}.example.com",
            "updatedAt": _minutes_before_epoch(index, 7919),
        })
    return accounts


def build_contacts(accounts: list[dict]) -> list[dict]:
    """Return two contacts per account, `con_0001`..., with accountId, names, email, updatedAt."""
    contacts = []
    for account_index, account in enumerate(accounts, start=1):
        domain = account["website"].removeprefix("https://")
        updated_at = _minutes_before_epoch(account_index, 104729)
        for member in range(2):
            index = 2 * (account_index - 1) + member + 1
            first = _FIRST_NAMES[(index - 1) % len(_FIRST_NAMES)]
            last = _LAST_NAMES[((index - 1) * 7 + (index - 1) // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
            contacts.append({
                "id": f"con_{index:04d}",
                "accountId": account["id"],
                "firstName": first,
                "lastName": last,
                "email": f"{first}.{last.replace(' ', '')}.{index:04d}@{domain}".lower(),
                "updatedAt": updated_at,
            })
    return contacts
