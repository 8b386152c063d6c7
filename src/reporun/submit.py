"""Submission: the one path every route takes to turn a request into a queued job (the URL
policy, the host's addresses, the owner's quota, then the queue)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reporun.errors import Forbidden, NotOffered
from reporun.jobs import Job, JobRules, build_spec
from reporun.localrepo import check_local_repo, local_path
from reporun.queue import QueueBackend
from reporun.store import Quota
from reporun.urlpolicy import RepoUrl, Unresolvable, UrlPolicy, check_addresses, is_local, resolve

OPERATORS_ONLY = (
    "local paths, file:// URLs and loopback hosts are the operator's: only an admin token may "
    "submit them"
)


@dataclass(frozen=True, slots=True)
class SubmitConfig:
    rules: JobRules
    quota: Quota  # per user
    admin_quota: Quota


class Submissions:
    def __init__(self, config: SubmitConfig, queue: QueueBackend) -> None:
        self.config = config
        self.queue = queue

    async def submit(
        self,
        owner: str,
        *,
        admin: bool = False,
        repo: str,
        ref: str | None = None,
        command: str | None = None,
        timeout: int | None = None,
        env: Mapping[str, str] | None = None,
        limits: Mapping[str, Any] | None = None,
        runtime: str | None = None,
        network: str | None = None,
        setup: str | None = None,
        rerun_of: uuid.UUID | None = None,
    ) -> Job:
        """Check, store and enqueue a job; InvalidInput naming the field (RepoUnusable for a
        local path that is no repository with commits), Forbidden for a local repository from a
        non-admin, NotOffered for network `open` where its owner may not have it, or
        QuotaExceeded."""
        rules = self.config.rules
        spec, url = build_spec(
            repo=repo,
            ref=ref,
            command=command,
            timeout=timeout,
            env=env,
            limits=limits,
            rules=rules,
            runtime=runtime,
            network=network,
            setup=setup,
        )
        may_open = rules.open_network.allows(owner, admin=admin)
        if spec.limits.network == "open" and not may_open:
            raise NotOffered(rules.open_network.refusal(), field="network")
        policy = rules.url_policy
        addresses = await _addresses(url, policy)
        if not admin and policy.allow_local and is_local(url, addresses, policy):
            # Before any look at the path, so a user learns nothing of what is there.
            raise Forbidden(OPERATORS_ONLY, field="repo")
        # The worker checks the host again when it clones, by then perhaps resolving to
        # loopback: only the job's own flag lets it through there.
        spec = spec.model_copy(
            update={
                "local_sources": admin and policy.allow_local,
                "network_open": may_open,
                "rerun_of": rerun_of,
            }
        )
        if url.scheme == "file":
            await check_local_repo(local_path(url.url), ref=spec.ref)
        quota = self.config.admin_quota if admin else self.config.quota
        return await self.queue.submit(spec, owner, quota=quota)


async def _addresses(url: RepoUrl, policy: UrlPolicy) -> list[str]:
    """The addresses the repository's host resolves to now, refused when one is not public
    (unless the policy allows it). The worker checks again at clone time, when the answer may
    have changed; a host that does not resolve now fails the job then, with the clone's own
    reason."""
    if url.host is None or url.host in policy.trusted_hosts:
        return []
    addresses: list[str] = []
    with contextlib.suppress(Unresolvable):
        addresses = await resolve(url.host)
    check_addresses(url.host, addresses, policy)
    return addresses
