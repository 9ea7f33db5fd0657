"""The one place that decides what the server serves, however many worker processes serve it.

Startup, folder polling and the repository API (``load``, ``unload``) all come here, one change at a
time. The coordinator scans the repository, snapshots and checks each new version once
(``snapshots``, ``model_checks``), and then walks every worker process (a ``Member``) through two
steps:

1. ``prepare``: each worker loads and warms up the new versions beside the ones it serves;
2. ``commit``: each worker swaps to the decided set at once and releases what left it.

A version that fails in any worker is committed nowhere: every worker keeps what it served, and the
index and the caller get that worker's reason. A call answers only after every worker has
committed, so index, metadata, readiness and config answer the same from every worker afterwards.
A worker that joins later (a replacement for one that died) prepares and commits the current state
before it serves anything; one that cannot is turned away, and the supervisor tries again later.

With one worker the coordinator lives in that process and its one member is the local registry;
with several it lives in the supervisor and its members are channels to the workers
(``serving.remote``, ``serving.follower``). The code path is the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import anyio.to_thread

from service.errors import InvalidRequest, ModelLoadError, ModelNotFound, ServiceError
from service.serving.model_checks import check_version
from service.serving.model_config import ModelConfig
from service.serving.plan import Index, IndexEntry, PrepareReport, Served, State, VersionPlan, plan_key
from service.serving.repository import (
    MANIFEST_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    VersionSpec,
    scan,
    scan_model,
    validate_model_name,
)
from service.serving.snapshots import SnapshotStore
from service.settings import Settings

log = logging.getLogger(__name__)

Fingerprint = tuple[int, ...]
T = TypeVar("T")

QUICK_ANSWER_S = 30.0
"""The most a worker may take to take a new index or to commit, beyond draining (neither loads
anything); the load timeout where that is shorter."""


class Unresponsive(ConnectionError):
    """A worker did not answer in time; it has been turned away (the supervisor replaces it)."""


class Member(Protocol):
    """One worker process as the coordinator sees it."""

    label: str
    """Names the worker in reasons ("" for the only, in-process one)."""

    replaceable: bool
    """Whether a worker that stops answering can be turned away and replaced (not the in-process one)."""

    async def set_index(self, index: Index) -> None: ...

    async def prepare(self, plans: list[VersionPlan]) -> PrepareReport: ...

    async def commit(self, served: Served, index: Index, load_failures: list[str]) -> None: ...

    async def evict(self, reason: str) -> None:
        """Make a worker that can no longer follow the decided state leave (the supervisor replaces it)."""
        ...


@dataclass(slots=True)
class _Candidate:
    plan: VersionPlan
    fingerprint: Fingerprint


class Coordinator:
    """Decides the repository state for every member; owned by whoever runs it (lifespan or supervisor)."""

    def __init__(self, settings: Settings, snapshots: SnapshotStore, expected_members: int = 1) -> None:
        self._settings = settings
        self._root = Path(settings.repository)
        self._snapshots = snapshots
        self._expected = expected_members
        self._served: Served = {}
        self._sources: dict[tuple[str, int], Fingerprint] = {}
        """The repository files each served version was snapshotted from, for polling."""
        self._index: Index = {}
        self._rejected: dict[tuple[str, int], Fingerprint] = {}
        """Files that failed to load, by fingerprint: polling retries them only once they change."""
        self._members: list[Member] = []
        self._arrivals: list[Member] = []
        self._started: asyncio.Future[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- members

    async def join(self, member: Member) -> None:
        """A worker arrives; returns once it serves the current state, raises if it cannot.

        The first ``expected_members`` wait for each other and load the repository together (the
        startup decision); later ones catch up with what has been decided since.
        """
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
        if not self._started.done():
            self._arrivals.append(member)
            if len(self._arrivals) >= self._expected and self._starting is None:
                # A task of its own: the startup must not end with whichever request triggered it.
                self._starting = asyncio.get_running_loop().create_task(self._startup())
            await asyncio.shield(self._started)
            return
        async with self._lock:
            await self._catch_up(member)

    async def started(self) -> None:
        """Returns once the startup decision is made (every first worker joined and loaded it)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._started)

    def leave(self, member: Member) -> None:
        """A worker is gone (it exited); changes from now on go to the others."""
        if member in self._members:
            self._members.remove(member)
        if member in self._arrivals:
            self._arrivals.remove(member)

    # ---------------------------------------------------------------- decisions

    async def load(self, name: str) -> None:
        """Load or reload every selected version of one model, in every worker."""
        validate_model_name(name)
        directory = self._root / name
        if directory.is_symlink() or not directory.is_dir():
            raise ModelNotFound(name)
        async with self._lock:
            spec = await anyio.to_thread.run_sync(scan_model, directory)
            failures = await self._apply(spec, force=True)
        if failures:
            # Triton answers a failed load with 400 and the reason; what was serving stays in place.
            raise InvalidRequest(f"failed to load '{name}': {'; '.join(failures)}")
        if not self._served.get(name):
            raise InvalidRequest(f"failed to load '{name}': no version folder holds a {MODEL_FILE}")

    async def unload(self, name: str) -> None:
        validate_model_name(name)
        async with self._lock:
            if name not in self._served and not any(key[0] == name for key in self._index):
                raise ModelNotFound(name)
            self._remove(name, "unloaded")
            await self._commit([], changed=True)

    async def poll(self) -> None:
        """Bring every worker in line with the folder: new and changed versions in, removed ones out."""
        if not await anyio.to_thread.run_sync(self._root.is_dir):
            # A repository that vanished (unmounted volume, a rename in progress) is not an order to
            # unload everything: keep serving and look again next time.
            log.warning("model repository %s is missing; keeping the loaded models", self._root)
            return
        async with self._lock:
            if not self._members:
                return  # no worker to try new versions on (all are being replaced): next time
            specs = await anyio.to_thread.run_sync(scan, self._root)
            seen = {spec.name for spec in specs}
            for spec in specs:
                await self._apply(spec, force=False)
            gone = [name for name in self._served if name not in seen]
            for name in gone:
                self._remove(name, "removed from the repository")
            if gone:
                await self._commit([], changed=True)

    async def poll_forever(self, interval_s: float) -> None:
        """Poll every ``interval_s`` once the startup decision is made (until cancelled)."""
        await self.started()
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll()
            except Exception:  # a bad scan must not stop polling
                log.exception("repository poll failed")

    # ---------------------------------------------------------------- internals

    async def _startup(self) -> None:
        assert self._started is not None
        try:
            async with self._lock:
                self._members = list(self._arrivals)
                self._arrivals.clear()
                specs = await anyio.to_thread.run_sync(scan, self._root)
                for spec in specs:
                    await self._apply(spec, force=False)
                await self._commit([], changed=True)  # every worker hears the (maybe empty) state once
        except Exception as exc:
            log.exception("the startup decision failed")
            self._started.set_exception(exc)
        else:
            self._started.set_result(None)

    async def _catch_up(self, member: Member) -> None:
        plans = [plan for versions in self._served.values() for plan in versions.values()]
        try:
            failures = (await self._ask(member, member.prepare(plans), "load")).failures
        except ConnectionError:
            return  # gone already
        if failures:
            reason = "; ".join(f"{key}: {why}" for key, why in failures.items())
            raise ModelLoadError(f"{member.label} cannot load what the other workers serve: {reason}")
        await self._ask(member, member.commit(self._served, dict(self._index), []), "commit")
        self._members.append(member)

    async def _apply(self, spec: ModelSpec, *, force: bool) -> list[str]:
        """Bring one model in line with its folder in every worker; why versions tried this time failed."""
        name = spec.name
        before = dict(self._index)
        if spec.config_error is not None:
            self._index[(name, None)] = IndexEntry(name, None, State.UNAVAILABLE, spec.config_error)
            await self._commit([], changed=self._index != before)
            return [spec.config_error]
        self._index.pop((name, None), None)
        wanted = {v.version: v for v in spec.versions}
        selected = spec.config.version_policy.select(list(wanted))
        if not wanted:
            self._index[(name, None)] = IndexEntry(name, None, State.UNAVAILABLE, "no version folders")
        current = self._served.get(name, {})
        failures: list[str] = []
        candidates: list[_Candidate] = []
        for version in selected:
            candidate = await self._candidate(wanted[version], spec.config, current.get(version), force, failures)
            if candidate is not None:
                candidates.append(candidate)
        accepted, warnings = await self._prepare_everywhere(candidates, failures)
        updated = {v: plan for v, plan in current.items() if v in selected} | {
            c.plan.spec.version: c.plan for c in accepted
        }
        for candidate in accepted:
            self._sources[candidate.plan.key] = candidate.fingerprint
        if updated:
            self._served[name] = dict(sorted(updated.items()))
        else:
            self._served.pop(name, None)
        for candidate in accepted:
            self._index[candidate.plan.key] = IndexEntry(
                name, candidate.plan.spec.version, State.READY, warnings.get(plan_key(*candidate.plan.key), "")
            )
        for version in [v for v in current if v not in updated]:
            self._sources.pop((name, version), None)
            self._index[(name, version)] = IndexEntry(
                name, version, State.UNAVAILABLE, "not selected by the version policy or removed"
            )
        for version in [v for (n, v) in list(self._index) if n == name and v is not None]:
            if version not in wanted and version not in updated:
                self._index.pop((name, version), None)
                self._rejected.pop((name, version), None)
        changed = bool(accepted) or updated != current or self._index != before
        await self._commit([name] * len(failures), changed=changed)
        return failures

    async def _candidate(
        self, source: VersionSpec, config: ModelConfig, existing: VersionPlan | None, force: bool, failures: list[str]
    ) -> _Candidate | None:
        """A version to load now, snapshotted and checked; None when nothing changed or it was refused."""
        key = (source.name, source.version)
        fingerprint = _fingerprint(source)
        unchanged_files = existing is not None and self._sources.get(key) == fingerprint
        if unchanged_files and not force:
            assert existing is not None
            if existing.config == config:
                return None  # unchanged files and config: keep serving what is loaded
            return _Candidate(VersionPlan(existing.spec, config, existing.digest, existing.size), fingerprint)
        if not force and self._rejected.get(key) == fingerprint:
            return None  # same bad files as last time: the index already says why
        try:
            plan = await anyio.to_thread.run_sync(self._snapshot, source, config)
        except ServiceError as exc:
            failures.append(self._reject(key, fingerprint, exc.message))
            return None
        except Exception as exc:  # never let one bad version stop the others (or the poller)
            log.exception("unexpected failure checking %s version %d", source.name, source.version)
            failures.append(self._reject(key, fingerprint, f"cannot load: {exc!r}"))
            return None
        if existing is not None and existing.identity == plan.identity:
            self._sources[key] = fingerprint
            self._rejected.pop(key, None)
            kept = self._index.get(key)
            warning = kept.reason if kept is not None and kept.reason.startswith("warning:") else ""
            self._index[key] = IndexEntry(source.name, source.version, State.READY, warning)
            return None  # the same bytes and config as served: nothing to reload
        return _Candidate(plan, fingerprint)

    def _snapshot(self, source: VersionSpec, config: ModelConfig) -> VersionPlan:
        settings = self._settings
        snapshot = self._snapshots.take(source, settings.max_model_bytes)
        check_version(snapshot.spec, settings.max_model_bytes, settings.verify_manifest, snapshot.hashes)
        return VersionPlan(snapshot.spec, config, snapshot.digest, snapshot.size)

    async def _prepare_everywhere(
        self, candidates: list[_Candidate], failures: list[str]
    ) -> tuple[list[_Candidate], dict[str, str]]:
        """Every member loads the candidates; those that failed anywhere are dropped (with the reason).
        Also returns the warnings of the accepted ones (a worker's, the same in every worker)."""
        if not candidates:
            return [], {}
        for candidate in candidates:
            name, version = candidate.plan.key
            self._index[(name, version)] = IndexEntry(name, version, State.LOADING)
        await self._broadcast_index()
        plans = [candidate.plan for candidate in candidates]
        members = list(self._members)
        results = await asyncio.gather(*(self._prepare_on(member, plans) for member in members))
        accepted = []
        warnings: dict[str, str] = {}
        for candidate in candidates:
            key = plan_key(*candidate.plan.key)
            reasons = list(dict.fromkeys(result.failures[key] for result in results if key in result.failures))
            if reasons:
                failures.append(self._reject(candidate.plan.key, candidate.fingerprint, "; ".join(reasons)))
            else:
                self._rejected.pop(candidate.plan.key, None)
                accepted.append(candidate)
                found = next((result.warnings[key] for result in results if key in result.warnings), None)
                if found is not None:
                    warnings[key] = f"warning: {found}"
        return accepted, warnings

    async def _prepare_on(self, member: Member, plans: list[VersionPlan]) -> PrepareReport:
        label = f"{member.label}: " if member.label else ""
        try:
            report = await self._ask(member, member.prepare(plans), "load")
        except Unresponsive as exc:
            return PrepareReport({plan_key(*plan.key): f"{label}{exc}" for plan in plans})
        except ConnectionError:
            # It may have died of this very load (out of memory): count it as that load's failure.
            return PrepareReport({plan_key(*plan.key): f"{label}the worker exited while loading" for plan in plans})
        return PrepareReport({key: f"{label}{reason}" for key, reason in report.failures.items()}, report.warnings)

    def _reject(self, key: tuple[str, int], fingerprint: Fingerprint, message: str) -> str:
        """Record why a version was refused; what served before keeps serving."""
        name, version = key
        log.error("cannot load: %s", message)
        self._rejected[key] = fingerprint
        serving = version in self._served.get(name, {})
        state = State.READY if serving else State.UNAVAILABLE
        reason = f"new files rejected, still serving the previous load: {message}" if serving else message
        self._index[key] = IndexEntry(name, version, state, reason)
        return message

    def _remove(self, name: str, reason: str) -> None:
        for version in self._served.pop(name, {}):
            self._sources.pop((name, version), None)
            self._index[(name, version)] = IndexEntry(name, version, State.UNAVAILABLE, reason)

    async def _broadcast_index(self) -> None:
        index = dict(self._index)
        members = list(self._members)
        outcomes = await asyncio.gather(
            *(self._ask(m, m.set_index(index), "take the index") for m in members),
            return_exceptions=True,
        )
        for member, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, ConnectionError):
                log.error("%s did not take the index: %r", member.label or "this process", outcome)

    async def _commit(self, load_failures: Sequence[str], *, changed: bool) -> None:
        """Every member serves the decided state; then snapshots nobody uses are removed."""
        if not changed and not load_failures:
            return
        served = {name: dict(versions) for name, versions in self._served.items()}
        index = dict(self._index)
        members = list(self._members)
        outcomes = await asyncio.gather(
            *(
                self._ask(m, m.commit(served, index, list(load_failures) if i == 0 else []), "commit")
                for i, m in enumerate(members)
            ),
            return_exceptions=True,
        )
        for member, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, ConnectionError):
                # It can no longer follow the decided state: it must not serve another one.
                log.error("%s failed to commit: %r", member.label or "this process", outcome)
                self.leave(member)
                await member.evict(f"commit failed: {outcome!r}")
        digests = {plan.digest for versions in self._served.values() for plan in versions.values()}
        await anyio.to_thread.run_sync(self._snapshots.keep_only, digests)

    def _bound(self, member: Member, what: str) -> float | None:
        """How long a member may take over a call; None: as long as it takes."""
        if what == "load":
            return self._settings.load_timeout_s
        if not member.replaceable:
            return None  # cancelling this very process's commit halfway would leave it between two states
        quick = min(QUICK_ANSWER_S, self._settings.load_timeout_s)
        # a commit waits for the requests still running on the versions that leave
        return quick + (self._settings.drain_timeout_s if what == "commit" else 0.0)

    async def _ask(self, member: Member, call: Awaitable[T], what: str) -> T:
        """One call to a member, bounded: a worker that hangs (a native library stuck in a load, a
        stopped process) must not hold every later repository change with it. One that can be
        replaced is turned away; the in-process one only fails this call."""
        timeout_s = self._bound(member, what)
        try:
            return await asyncio.wait_for(call, timeout_s)
        except TimeoutError:
            assert timeout_s is not None
            reason = f"did not {what} within {timeout_s:g} s"
            if member.replaceable:
                self.leave(member)
                await member.evict(reason)
                reason += "; the worker is replaced"
            raise Unresponsive(reason) from None


def _fingerprint(spec: VersionSpec) -> Fingerprint:
    """Cheap change detection for polling: size and modification time of the version's files."""
    values: list[int] = []
    for path in (spec.model_path, spec.directory / WEIGHTS_FILE, spec.directory / MANIFEST_FILE):
        try:
            stat = path.stat()
        except OSError:
            values += [-1, -1]
        else:
            values += [stat.st_size, stat.st_mtime_ns]
    return tuple(values)
