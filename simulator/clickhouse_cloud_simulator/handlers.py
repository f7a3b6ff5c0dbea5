"""Route handlers of the simulated ClickHouse Cloud API (Managed Postgres subset)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clickhouse_cloud_simulator import prometheus
from clickhouse_cloud_simulator.store import Service, Store, iso_second, size_vcpus
from clickhouse_cloud_simulator.validation import (
    ApiError,
    bad,
    check_uuid,
    query_int,
    query_window,
    spec_sizes,
    validate_config,
    validate_create,
    validate_password,
    validate_patch,
    validate_replica,
    validate_restore,
    validate_state,
)

if TYPE_CHECKING:  # pragma: no cover
    from clickhouse_cloud_simulator.server import Simulator

_MISSING = object()
_RequestKey = getattr(web, "RequestKey", None)


def _key(name: str, kind: type) -> Any:
    return _RequestKey(name, kind) if _RequestKey is not None else name


REQUEST_ID = _key("mpg_request_id", str)
RAW_BODY = _key("mpg_raw_body", bytes)
ORG_ID = _key("mpg_org_id", str)
ORG_PROMETHEUS_MAX = 100
SORT_BY = (
    "total_duration",
    "avg_duration",
    "call_count",
    "total_blks_read",
    "total_cpu_time",
    "error_count",
    "max_duration",
    "p50_duration",
    "p95_duration",
    "p99_duration",
    "total_rows",
    "total_shared_blks_hit",
    "total_wal_bytes",
)


def ok(request: web.Request, result: Any = _MISSING, **envelope: Any) -> web.Response:
    """The success envelope ``{result, requestId, status}`` (no ``result`` when omitted); ``envelope``
    adds top-level fields (the paging fields of list endpoints)."""
    body: dict[str, Any] = {}
    if result is not _MISSING:
        body["result"] = result
    body.update(envelope)
    body["requestId"] = request[REQUEST_ID]
    body["status"] = 200
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def json_body(request: web.Request) -> Any:
    raw: bytes = request[RAW_BODY]
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise bad(f"Content-Type must be application/json (got '{request.content_type or 'none'}')")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise bad(f"Malformed JSON in request body: {str(exc)[:120]}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class Api:
    """The handlers; bound to one :class:`Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @property
    def store(self) -> Store:
        return self.sim.store

    @property
    def sizes(self) -> tuple[str, ...]:
        return self.sim.config.sizes or spec_sizes()

    # -- helpers ---------------------------------------------------------------------------
    def org(self, request: web.Request) -> str:
        org_id = request.match_info["org_id"]
        if not check_uuid_ok(org_id):
            raise bad(f"Invalid organization id {org_id}")
        if org_id.lower() != request[ORG_ID]:
            raise ApiError(404, f"Organization {org_id} not found")
        return org_id.lower()

    def service(self, request: web.Request) -> tuple[str, Service]:
        org_id = self.org(request)
        service_id = check_uuid(request.match_info["service_id"], "service")
        return org_id, self.store.get(org_id, service_id)

    def view(
        self, svc: Service, *, credentials: bool = False, omit: tuple[str, ...] = (), state: str | None = None
    ) -> dict[str, Any]:
        """``PostgresService`` wire view; credentials only when asked (or redaction is off)."""
        out: dict[str, Any] = {
            "id": svc.id,
            "name": svc.name,
            "provider": svc.provider,
            "region": svc.region,
            "postgresVersion": svc.postgres_version,
            "size": svc.size,
            "storageSize": svc.storage_size,
            "haType": svc.ha_type,
            "tags": [dict(t) for t in svc.tags],
            "state": state or self.store.state_of(svc),
            "createdAt": svc.created_at,
            "isPrimary": svc.is_primary,
            "username": "postgres",
            "hostname": svc.hostname,
            "ipAccessList": [dict(rule) for rule in svc.ip_access_list],
        }
        earliest = self.store.earliest_restore(svc)
        if earliest is not None:
            out["earliestRestoreTime"] = iso_second(earliest)
        if credentials or not self.sim.config.redact:
            out["password"] = svc.password
            out["connectionString"] = svc.connection_string()
        for key in omit:
            out.pop(key, None)
        return out

    def list_view(self, svc: Service) -> dict[str, Any]:
        keys = (
            "id",
            "name",
            "provider",
            "region",
            "postgresVersion",
            "size",
            "haType",
            "tags",
            "state",
            "createdAt",
            "isPrimary",
        )
        full = self.view(svc)
        return {k: full[k] for k in keys}

    # -- organisations -----------------------------------------------------------------------
    async def organizations(self, request: web.Request) -> web.Response:
        org = self.store.orgs[request[ORG_ID]]
        return ok(
            request,
            [
                {
                    "id": org.id,
                    "createdAt": org.created_at,
                    "name": org.name,
                    "privateEndpoints": [],
                    "byocConfig": [],
                    "enableCoreDumps": False,
                }
            ],
        )

    # -- services ------------------------------------------------------------------------------
    async def list_services(self, request: web.Request) -> web.Response:
        org_id = self.org(request)
        return ok(request, [self.list_view(s) for s in self.store.list(org_id)])

    async def create_service(self, request: web.Request) -> web.Response:
        org_id = self.org(request)
        cfg = self.sim.config
        fields = validate_create(
            await json_body(request),
            regions=cfg.regions,
            sizes=self.sizes,
            providers=cfg.providers,
            strict_pg_config=cfg.strict_pg_config,
        )
        fields["pg_config"] = self._supported(fields["pg_config"])
        svc = await self.store.create(org_id, fields)
        return ok(request, self.view(svc, credentials=True, omit=("createdAt",), state="creating"))

    async def get_service(self, request: web.Request) -> web.Response:
        _, svc = self.service(request)
        return ok(request, self.view(svc))

    async def patch_service(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        if not svc.is_primary and svc.deleting_until is None:
            # rejected before the body is even read (as Ubicloud does)
            raise bad("Read replicas cannot be modified directly! Please modify the parent database instead.")
        changes = validate_patch(await json_body(request), sizes=self.sizes)
        svc = await self.store.patch(org_id, svc.id, changes)
        return ok(request, self.view(svc))

    async def delete_service(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        await self.store.delete(org_id, svc.id)
        return ok(request)

    async def ca_certificates(self, request: web.Request) -> web.Response:
        _, svc = self.service(request)
        fleet = self.store.fleet
        if svc.has_server and fleet is not None:
            pem = fleet.ca_pem(svc.id)
        else:
            pem = await self.sim.certs.get(svc.id, svc.cert_generation, svc.hostname)
        return web.Response(
            body=pem.encode(),
            headers={
                "Content-Type": "application/x-pem-file",
                "Content-Disposition": 'attachment; filename="postgres-ca-certificate.pem"',
            },
        )

    def _supported(self, pg: dict[str, str] | None) -> dict[str, str] | None:
        """``pg`` without the keys this API drops silently (``unsupported_pg_config``)."""
        dropped = self.sim.config.unsupported_pg_config
        if pg is None or not dropped:
            return pg
        return {k: v for k, v in pg.items() if k not in dropped}

    async def get_config(self, request: web.Request) -> web.Response:
        _, svc = self.service(request)
        return ok(request, {"pgConfig": dict(svc.pg_config), "pgBouncerConfig": dict(svc.pg_bouncer_config)})

    async def _write_config(self, request: web.Request, *, replace: bool) -> web.Response:
        org_id, svc = self.service(request)
        pg, bouncer = validate_config(
            await json_body(request), replace=replace, strict_pg_config=self.sim.config.strict_pg_config
        )
        svc, restart = await self.store.set_config(org_id, svc.id, self._supported(pg), bouncer, replace=replace)
        result: dict[str, Any] = {"pgConfig": dict(svc.pg_config), "pgBouncerConfig": dict(svc.pg_bouncer_config)}
        if restart:
            result["message"] = (
                "The changes in the following parameters require a database restart to take effect: "
                f"{', '.join(restart)}. You can restart the database by using the restart endpoint."
            )
        return ok(request, result)

    async def post_config(self, request: web.Request) -> web.Response:
        return await self._write_config(request, replace=True)

    async def patch_config(self, request: web.Request) -> web.Response:
        return await self._write_config(request, replace=False)

    async def set_password(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        if not svc.is_primary:
            raise bad("Superuser password cannot be updated for read replicas!")
        password = validate_password(await json_body(request))
        _, generated = await self.store.set_password(org_id, svc.id, password)
        return ok(request, {"password": generated} if generated else {})

    async def set_state(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        command = validate_state(await json_body(request))
        svc = await self.store.command(org_id, svc.id, command)
        omit = ("isPrimary",) if command == "promote" else ()  # the live promote response omits it
        return ok(request, self.view(svc, omit=omit))

    async def read_replica(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        fields = validate_replica(await json_body(request), strict_pg_config=self.sim.config.strict_pg_config)
        fields["pg_config"] = self._supported(fields["pg_config"])
        replica = await self.store.create_replica(org_id, svc.id, fields)
        return ok(request, self.view(replica, state="creating"))

    async def restored_service(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        fields = validate_restore(await json_body(request), strict_pg_config=self.sim.config.strict_pg_config)
        fields["pg_config"] = self._supported(fields["pg_config"])
        restored = await self.store.restore(org_id, svc.id, fields)
        return ok(request, self.view(restored, state="creating"))

    # -- observability ------------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        _, svc = self.service(request)
        start, end = query_window(request.query)
        span = (end - start).total_seconds()
        bucket = query_int(request.query, "bucket_size_seconds", default=None, minimum=1)
        if bucket is None:
            bucket = max(60, math.ceil(span / 250))
        points = math.ceil(span / bucket)
        if points > 250:
            raise bad(f"Requests are capped at 250 data points ({points} requested); increase bucket_size_seconds")
        created = datetime.fromisoformat(svc.created_at).timestamp()
        t0 = int(start.timestamp())
        stamps = [t0 + i * bucket for i in range(points) if t0 + (i + 1) * bucket > created]

        def series(label: str, base: float, spread: float) -> dict[str, Any]:
            pts = []
            for ts in stamps:
                h = int(hashlib.sha256(f"{svc.id}/{label}/{ts}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                pts.append({"timestamp": ts, "value": round(base + spread * h, 3)})
            return {"label": label, "dataPoints": pts}

        cores = size_vcpus(svc.size)
        result = {
            "metrics": [
                {
                    "key": "cpu_usage",
                    "name": "CPU usage",
                    "unit": "%",
                    "description": "CPU utilisation by mode.",
                    "series": [series("user", 2, 6), series("system", 1, 2), series("iowait", 0, 0.5)],
                },
                {
                    "key": "memory_usage",
                    "name": "Memory usage",
                    "unit": "%",
                    "description": "Memory used as a percentage of the limit.",
                    "series": [series("used", 10, 5)],
                },
                {
                    "key": "connection_count",
                    "name": "Connections",
                    "unit": "count",
                    "description": "Client connections.",
                    "series": [series("active", 1, 2), series("idle", 0, 3)],
                },
                {
                    "key": "cache_hit_ratio",
                    "name": "Cache hit ratio",
                    "unit": "%",
                    "description": "Buffer cache hit ratio.",
                    "series": [series("hit ratio", 98, 2)],
                },
                {
                    "key": "disk_iops",
                    "name": "Disk IOPS",
                    "unit": "IOPS",
                    "description": f"Disk operations ({cores} vCPU instance).",
                    "series": [series("Reads", 5, 20), series("Writes", 10, 30)],
                },
            ]
        }
        return ok(request, result)

    async def slow_query_patterns(self, request: web.Request) -> web.Response:
        self.service(request)
        query_window(request.query)
        sort_by = request.query.get("sort_by")
        if sort_by is not None and sort_by not in SORT_BY:
            raise bad(f"Invalid sort_by '{sort_by}'")
        if request.query.get("sort_order") not in (None, "asc", "desc"):
            raise bad("sort_order must be 'asc' or 'desc'")
        query_int(request.query, "limit", default=20, minimum=1, maximum=500)
        query_int(request.query, "offset", default=0, minimum=0)
        return ok(request, [])  # no query insights are simulated

    async def slow_query_pattern(self, request: web.Request) -> web.Response:
        self.service(request)
        for key in ("db_name", "db_user", "db_operation"):
            if not request.query.get(key):
                raise bad(f"Missing required query parameter: {key}")
        raise ApiError(404, f"Query pattern {request.match_info['query_id']} not found")

    async def logs(self, request: web.Request) -> web.Response:
        self.service(request)
        query_window(request.query)
        query_int(request.query, "limit", default=50, minimum=1, maximum=2000)
        query_int(request.query, "offset", default=0, minimum=0)
        return ok(request, [])  # no server logs are simulated

    async def backups(self, request: web.Request) -> web.Response:
        """``GET …/backups`` (postgresServiceBackupGetList; newer than the vendored document): the shape
        clickhousectl 0.5.0 reads -- ``result`` = [{key, status, lastModified}], and ``limit``,
        ``totalCount``, ``nextCursor`` beside it in the envelope."""
        _, svc = self.service(request)
        limit = query_int(request.query, "limit", default=100, minimum=1, maximum=100)
        assert limit is not None
        backups = self.store.backups(svc)  # newest first; keys grow with time
        total = len(backups)
        cursor = request.query.get("cursor")
        if cursor is not None:  # the key of the last backup of the previous page: stable while backups are added
            try:
                after = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
            except (ValueError, UnicodeDecodeError):
                after = ""
            if not after.startswith("base_"):
                raise bad("Invalid cursor; use nextCursor of the previous page")
            backups = [b for b in backups if b["key"] < after]
        page = backups[:limit]
        extra: dict[str, Any] = {"limit": limit, "totalCount": total}
        if len(backups) > limit:
            extra["nextCursor"] = base64.urlsafe_b64encode(page[-1]["key"].encode()).decode().rstrip("=")
        return ok(request, page, **extra)

    async def _prometheus_entries(self, services: list[Service]) -> list[tuple[Service, str, float, Any]]:
        fleet = self.store.fleet
        now = self.store.clock()

        async def one(svc: Service) -> tuple[Service, str, float, Any]:
            state = self.store.state_of(svc)
            stats = None
            if fleet is not None and svc.has_server and state in ("running", "restarting"):
                try:
                    stats = await asyncio.wait_for(fleet.stats(svc.id), timeout=5)
                except Exception:  # noqa: BLE001 - a busy/restarting server: fall back to synthetic numbers
                    stats = None
            uptime = now - svc.started_mono
            if stats and isinstance(stats.get("started_at"), (int, float)):
                uptime = time.time() - stats["started_at"]
            return svc, state, uptime, stats

        return list(await asyncio.gather(*(one(s) for s in services)))

    def _text(self, text: str) -> web.Response:
        return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; charset=UTF-8"})

    async def prometheus_org(self, request: web.Request) -> web.Response:
        org_id = self.org(request)
        services = self.store.list(org_id)[:ORG_PROMETHEUS_MAX]
        return self._text(prometheus.render(org_id, await self._prometheus_entries(services)))

    async def prometheus_service(self, request: web.Request) -> web.Response:
        org_id, svc = self.service(request)
        return self._text(prometheus.render(org_id, await self._prometheus_entries([svc])))

    # -- routing ---------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        org = "/v1/organizations/{org_id}/postgres"
        one = org + "/{service_id}"
        return [
            web.get("/v1/organizations", self.organizations),
            web.get(org, self.list_services),
            web.post(org, self.create_service),
            web.get(org + "/prometheus", self.prometheus_org),  # before {service_id}
            web.get(one, self.get_service),
            web.patch(one, self.patch_service),
            web.delete(one, self.delete_service),
            web.get(one + "/caCertificates", self.ca_certificates),
            web.get(one + "/config", self.get_config),
            web.post(one + "/config", self.post_config),
            web.patch(one + "/config", self.patch_config),
            web.patch(one + "/password", self.set_password),
            web.patch(one + "/state", self.set_state),
            web.post(one + "/readReplica", self.read_replica),
            web.post(one + "/restoredService", self.restored_service),
            web.get(one + "/metrics", self.metrics),
            web.get(one + "/slowQueryPatterns", self.slow_query_patterns),
            web.get(one + "/slowQueryPatterns/{query_id}", self.slow_query_pattern),
            web.get(one + "/logs", self.logs),
            web.get(one + "/backups", self.backups),
            web.get(one + "/prometheus", self.prometheus_service),
        ]


def check_uuid_ok(value: str) -> bool:
    try:
        check_uuid(value, "organization")
    except ApiError:
        return False
    return True


def utc_now() -> datetime:
    return datetime.now(UTC)
