"""/v1/keys: a project's API keys: list them, issue another, revoke one (recorded with who and when)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import ApiKeyDep, Limit, Offset, RecentKeysDep, SessionDep
from app.schemas.common import Page
from app.schemas.keys import KeyCreated, KeyIn, KeyOut, RevokeIn
from app.services import keys

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _who(caller: ApiKeyDep) -> str:
    return f"key {caller.prefix} ({caller.name})"


@router.get("", summary="List the project's API keys, revoked ones included", response_model=Page[KeyOut])
def list_keys(caller: ApiKeyDep, session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Page[KeyOut]:
    """Oldest first, with who issued and who revoked each; never a key itself."""
    rows = keys.list_keys(session, caller.project)
    items = [KeyOut.model_validate(r) for r in rows[offset : offset + limit]]
    return Page(items=items, total=len(rows), limit=limit, offset=offset)


@router.post(
    "",
    status_code=201,
    summary="Issue another API key for the project (shown once)",
    response_model=KeyCreated,
)
def create_key(body: KeyIn, caller: ApiKeyDep, session: SessionDep, response: Response) -> KeyCreated:
    """The new key is in the answer once; the service keeps only its hash."""
    row, plaintext = keys.create_key(session, caller.project, name=body.name, by=_who(caller))
    response.headers["Location"] = f"/v1/keys/{row.id}"
    return KeyCreated.model_validate({**KeyOut.model_validate(row).model_dump(), "key": plaintext})


@router.post(
    "/{key_id}/revoke",
    summary="Revoke an API key of the project: it stops working, its browser sessions end",
    response_model=KeyOut,
    responses={409: {"description": "Already revoked, or the project's last active key."}},
)
async def revoke_key(
    key_id: uuid.UUID, body: RevokeIn, caller: ApiKeyDep, session: SessionDep, recent: RecentKeysDep
) -> KeyOut:
    """Refused for the project's last active key (create another first). The key stops working at once in
    this API process and within `GTC_LOOKUP_CACHE_SECONDS` in the others."""

    def revoke() -> KeyOut:
        row = keys.find_key(session, str(key_id), caller.project)
        revoked = keys.revoke_key(session, row, by=_who(caller), note=body.note, keep_one=True)
        return KeyOut.model_validate(revoked)

    out = await run_in_threadpool(revoke)
    recent.forget(lambda row: row.id == key_id)
    return out
