"""The tokens table on both databases: record, look up, list, find by prefix, revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reporun.errors import InvalidInput
from reporun.store import Store
from reporun.store.tokens import TokenRecord

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def record(token_id: str, name: str = "ci", expires_at: datetime | None = None) -> TokenRecord:
    return TokenRecord(id=token_id, name=name, role="user", created_at=NOW, expires_at=expires_at)


async def test_tokens_are_recorded_listed_and_revoked(any_store: Store) -> None:
    tokens = any_store.tokens
    later = NOW + timedelta(hours=1)
    await tokens.add(record("aaaa1111", "ci", expires_at=later))
    await tokens.add(record("aaaa2222", "bot"))
    await tokens.add(record("bbbb3333", "ops"))
    assert await tokens.get("aaaa1111") == record("aaaa1111", "ci", expires_at=later)
    assert await tokens.get("nope") is None
    assert [t.id for t in await tokens.list_tokens()] == ["aaaa1111", "aaaa2222", "bbbb3333"]
    assert (await tokens.get("aaaa1111")).state(later) == "expired"

    revoked, now_revoked = await tokens.revoke("bbbb33")
    assert now_revoked and revoked.id == "bbbb3333" and revoked.revoked_at is not None
    assert revoked.revoked_at.utcoffset() == timedelta(0)
    assert revoked.state(NOW) == "revoked"
    again, now_revoked = await tokens.revoke("bbbb3333")
    assert not now_revoked and again.revoked_at == revoked.revoked_at
    assert (await tokens.get("aaaa2222")).revoked_at is None


@pytest.mark.parametrize(
    ("wanted", "message"),
    [("aaaa", "no token aaaa"), ("aaaa12", "no token"), ("aaaa1", "no token"), ("a%", "not a")],
)
async def test_revoking_needs_one_known_token(any_store: Store, wanted: str, message: str) -> None:
    await any_store.tokens.add(record("aaaa1111"))
    await any_store.tokens.add(record("aaaa2222"))
    with pytest.raises(InvalidInput, match=message) as caught:
        await any_store.tokens.revoke(wanted)
    assert caught.value.field == "id"


async def test_a_prefix_shared_by_two_tokens_is_refused(any_store: Store) -> None:
    await any_store.tokens.add(record("abcdef01"))
    await any_store.tokens.add(record("abcdef02"))
    with pytest.raises(InvalidInput, match="more than one"):
        await any_store.tokens.revoke("abcdef")
