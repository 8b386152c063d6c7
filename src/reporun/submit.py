"""Submission: the one path every route takes to turn a request into a queued job (the URL
policy, the host's addresses, the owner's quota, then the queue)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reporun.jobs import Job, JobRules, build_spec
from reporun.localrepo import check_local_repo, local_path
from reporun.queue import QueueBackend
from reporun.store import Quota
from reporun.urlpolicy import Unresolvable, check_resolved


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
    ) -> Job:
        """Check, store and enqueue a job; InvalidInput naming the field (RepoUnusable for a
        local path that is no repository with commits), or QuotaExceeded."""
        rules = self.config.rules
        spec, url = build_spec(
            repo=repo,
            ref=ref,
            command=command,
            timeout=timeout,
            env=env,
            limits=limits,
            rules=rules,
        )
        # The worker checks again at clone time, when the answer may have changed; a host that
        # does not resolve now fails the job then, with the clone's own reason.
        with contextlib.suppress(Unresolvable):
            await check_resolved(url, rules.url_policy)
        if url.scheme == "file":
            await check_local_repo(local_path(url.url), ref=spec.ref)
        quota = self.config.admin_quota if admin else self.config.quota
        return await self.queue.submit(spec, owner, quota=quota)
