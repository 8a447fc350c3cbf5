"""Services, their revisions and their routes: what the local control plane has been told to run.

What belongs here is the bookkeeping upstream's Configuration and Route reconcilers do:

* applying a :class:`~kdp.manifest.ServiceSpec` creates a revision ``<service>-00001``,
  ``-00002``, ... when the template differs from the latest revision's (or the one named by
  ``spec.template.metadata.name``); an unchanged template creates nothing;
* ``latestRevision`` traffic goes to the service's latest *ready* revision (one that has had a
  ready pod), as upstream's ``latestReadyRevisionName``; before any revision was ready it goes
  to the latest created one, so the first request can start it from zero;
* a tagged target is also its own route, ``<tag>-<service>``, at 100 %;
* a revision is *reachable* while some route sends it traffic.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kdp.manifest import RevisionTemplate, ServiceSpec

__all__ = ["ApplyResult", "Catalog", "CatalogError", "Revision", "RevisionKey", "Route"]

logger = logging.getLogger(__name__)

RevisionKey = tuple[str, str]
"""(namespace, revision name)"""


class CatalogError(ValueError):
    """An apply that cannot be carried out (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class Revision:
    namespace: str
    name: str
    service: str
    generation: int
    template: RevisionTemplate
    base_dir: str
    digest: str

    @property
    def key(self) -> RevisionKey:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Route:
    namespace: str
    name: str
    """The first Host label: the service, or ``<tag>-<service>``."""
    service: str
    splits: tuple[tuple[str, int], ...]
    """(revision, percent), percents summing to 100; zero-percent targets are left out."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    service: tuple[str, str]
    created: Revision | None
    routes_changed: bool
    notes: tuple[str, ...] = ()


@dataclass
class _Service:
    spec: ServiceSpec
    revisions: list[str] = field(default_factory=list)
    """Names in creation order."""


class Catalog:
    def __init__(self) -> None:
        self._services: dict[tuple[str, str], _Service] = {}
        self._revisions: dict[RevisionKey, Revision] = {}
        self._ready: set[RevisionKey] = set()
        self._routes: tuple[Route, ...] = ()

    # -- reading --------------------------------------------------------------------------

    @property
    def revisions(self) -> Mapping[RevisionKey, Revision]:
        return self._revisions

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def services(self) -> list[ServiceSpec]:
        return [s.spec for s in self._services.values()]

    def service_revisions(self, namespace: str, service: str) -> list[Revision]:
        svc = self._services.get((namespace, service))
        return [self._revisions[(namespace, n)] for n in svc.revisions] if svc else []

    def latest_created(self, namespace: str, service: str) -> Revision | None:
        revs = self.service_revisions(namespace, service)
        return revs[-1] if revs else None

    def latest_ready(self, namespace: str, service: str) -> Revision | None:
        for rev in reversed(self.service_revisions(namespace, service)):
            if rev.key in self._ready:
                return rev
        return None

    def is_ready(self, key: RevisionKey) -> bool:
        return key in self._ready

    def traffic_of(self, key: RevisionKey) -> int:
        """Percent of its service's main route that goes to the revision."""
        rev = self._revisions.get(key)
        if rev is None:
            return 0
        for route in self._routes:
            if route.namespace == rev.namespace and route.name == rev.service:
                return sum(p for r, p in route.splits if r == rev.name)
        return 0

    def reachable(self, key: RevisionKey) -> bool:
        return any(route.namespace == key[0] and any(r == key[1] for r, _ in route.splits) for route in self._routes)

    # -- changing -------------------------------------------------------------------------

    def apply(self, spec: ServiceSpec) -> ApplyResult:
        svc = self._services.get(spec.key)
        existing = [self._revisions[(spec.namespace, n)] for n in svc.revisions] if svc else []
        digest = spec.template.digest()
        created: Revision | None = None
        if spec.template.name:
            named = self._revisions.get((spec.namespace, spec.template.name))
            if named is not None and (named.service != spec.name or named.digest != digest):
                raise CatalogError(f"{spec.source}: spec.template.metadata.name: revision {spec.template.name!r} "
                                   "already exists with a different template; name the new one differently")
            if named is None:
                created = self._new_revision(spec, existing, spec.template.name, digest)
        elif not existing or existing[-1].digest != digest:
            generation = existing[-1].generation + 1 if existing else 1
            name = f"{spec.name}-{generation:05d}"
            while (spec.namespace, name) in self._revisions:  # after a BYO name that looked generated
                generation += 1
                name = f"{spec.name}-{generation:05d}"
            created = self._new_revision(spec, existing, name, digest)
        names = {r.name for r in existing} | ({created.name} if created else set())
        for i, t in enumerate(spec.traffic):
            if t.revision_name and t.revision_name not in names:
                raise CatalogError(f"{spec.source}: spec.traffic[{i}].revisionName: revision {t.revision_name!r} "
                                   f"of service {spec.name!r} does not exist; known: {', '.join(sorted(names))}")
        if svc is None:
            svc = self._services[spec.key] = _Service(spec)
        svc.spec = spec
        if created is not None:
            self._revisions[created.key] = created
            svc.revisions.append(created.name)
            logger.info("service %s/%s: created revision %s", spec.namespace, spec.name, created.name)
        return ApplyResult(spec.key, created, self._recompute_routes(), spec.notes)

    def _new_revision(self, spec: ServiceSpec, existing: list[Revision], name: str, digest: str) -> Revision:
        generation = (existing[-1].generation + 1) if existing else 1
        return Revision(spec.namespace, name, spec.name, generation, spec.template, spec.base_dir, digest)

    def delete_service(self, namespace: str, service: str) -> list[Revision]:
        """Forget the service; returns its revisions (to be stopped and deleted)."""
        svc = self._services.pop((namespace, service), None)
        if svc is None:
            return []
        gone = [self._revisions.pop((namespace, n)) for n in svc.revisions]
        self._ready.difference_update(r.key for r in gone)
        self._recompute_routes()
        return gone

    def mark_ready(self, key: RevisionKey) -> bool:
        """The revision had a ready pod. Returns True when that moved traffic."""
        if key in self._ready or key not in self._revisions:
            return False
        self._ready.add(key)
        return self._recompute_routes()

    def _recompute_routes(self) -> bool:
        routes: list[Route] = []
        for (namespace, name), svc in sorted(self._services.items()):
            latest = self.latest_ready(namespace, name) or self.latest_created(namespace, name)
            splits: dict[str, int] = {}
            for t in svc.spec.traffic:
                rev = t.revision_name or (latest.name if latest else "")
                if not rev:
                    continue
                if t.percent > 0:
                    splits[rev] = splits.get(rev, 0) + t.percent
                if t.tag:
                    routes.append(Route(namespace, f"{t.tag}-{name}", name, ((rev, 100),)))
            if splits:
                routes.append(Route(namespace, name, name, tuple(splits.items())))
        fresh = tuple(sorted(routes, key=lambda r: (r.namespace, r.name)))
        changed = fresh != self._routes
        self._routes = fresh
        return changed

    def keys(self) -> Iterable[RevisionKey]:
        return self._revisions.keys()
