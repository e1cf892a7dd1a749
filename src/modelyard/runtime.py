"""Start and stop everything a server owns: store, model workers, caches, services."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from modelyard.api.context import Services
from modelyard.control.config_file import apply_config_file
from modelyard.control.endpoints import EndpointService
from modelyard.control.permissions import PermissionService
from modelyard.control.plaintext import unseal
from modelyard.control.principals import PrincipalService
from modelyard.control.sync import ReplicaSync
from modelyard.control.tokens import TokenService
from modelyard.engine.model_store import ModelStore
from modelyard.engine.supervisor import EngineSupervisor
from modelyard.gateway.access import AccessControl
from modelyard.gateway.auth import ADMIN_USER, Authenticator
from modelyard.gateway.endpoints import EndpointRegistry
from modelyard.gateway.guardrails import Guardrails
from modelyard.gateway.judge import Judge
from modelyard.gateway.limits import build_limiter
from modelyard.gateway.metrics import Metrics
from modelyard.gateway.recording import Recorder
from modelyard.gateway.service import QueryService
from modelyard.providers import ProviderRegistry
from modelyard.providers.catalog import external_builders
from modelyard.providers.external import ExternalContext
from modelyard.providers.http import SessionPool
from modelyard.providers.local import LocalModels
from modelyard.schemas.endpoints import EndpointCreate
from modelyard.secrets import SecretService, SecretVault, load_secret_box
from modelyard.settings import Settings
from modelyard.store import Store
from modelyard.store.usage import RecordWriter

log = logging.getLogger("modelyard")

_DEFAULT_ENDPOINT_CREATED = "default_endpoint_created"


@dataclass
class Runtime:
    services: Services
    store: Store
    providers: ProviderRegistry
    sessions: SessionPool

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Open the store, load endpoints and tokens into memory, start model workers."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.resolved_database_url)
        await asyncio.to_thread(store.migrate)
        authenticator = Authenticator(await asyncio.to_thread(store.all_tokens))
        model_store = ModelStore(settings.resolved_models_dir)

        async def prepare(name: str) -> Path:
            model = await asyncio.to_thread(model_store.ensure, name)
            return (await asyncio.to_thread(model_store.verified, model.name)).path

        supervisor = EngineSupervisor(log_dir=settings.data_dir / "logs", prepare=prepare)
        # PBKDF2 over a passphrase takes a fraction of a second: off the event loop.
        secret_box = await asyncio.to_thread(load_secret_box, settings)
        vault = SecretVault()
        secrets_service = SecretService(store, secret_box, vault)
        await secrets_service.load()  # before endpoints, whose providers resolve secrets
        sessions = SessionPool()
        external = ExternalContext(sessions, vault.get, partial(unseal, box=secret_box))
        providers = ProviderRegistry(
            [LocalModels(supervisor, model_store, settings), *external_builders(external)]
        )
        registry = EndpointRegistry()
        guardrails = _guardrails(settings, registry)
        endpoint_admin = EndpointService(
            store, registry, providers, secret_box, gateway_checks=[guardrails.check_config]
        )
        await endpoint_admin.load()
        tokens = TokenService(store, authenticator)
        access = AccessControl()
        principals = PrincipalService(store, authenticator, access)
        await principals.bootstrap()  # user admin in group admins, from the first start
        permissions = PermissionService(store, access, principals)
        await permissions.load()
        recorder = _recorder(settings, store)
        limiter = await build_limiter(settings)
        recorder.metrics.watch_limiter(limiter.stats)
        services = Services(
            settings=settings,
            authenticator=authenticator,
            endpoints=registry,
            queries=QueryService(
                registry,
                authenticator,
                access=access,
                recorder=recorder,
                limits=limiter,
                guardrails=guardrails,
            ),
            endpoint_admin=endpoint_admin,
            tokens=tokens,
            secrets=secrets_service,
            vault=vault,
            secret_box=secret_box,
            workspace_id=await _workspace_id(store),
            sync=ReplicaSync(store),
            access=access,
            principals=principals,
            permissions=permissions,
        )
        runtime = cls(services, store, providers, sessions)
        await runtime._first_start(settings)
        await services.sync.changed()  # a default endpoint or config file the others lack
        # Principals before tokens: a new user's token never meets a directory without them.
        for reload in (
            endpoint_admin.reload,
            principals.reload,
            permissions.load,
            tokens.reload,
            secrets_service.reload,
        ):
            services.sync.on_change(reload)
        await services.sync.start()
        return runtime

    async def _first_start(self, settings: Settings) -> None:
        svc = self.services
        if settings.default_model and not await asyncio.to_thread(
            self.store.get_setting, _DEFAULT_ENDPOINT_CREATED
        ):
            if svc.endpoints.find(settings.default_model) is None:
                body = EndpointCreate.model_validate(
                    {
                        "name": settings.default_model,
                        "config": {"served_entities": [{"entity_name": settings.default_model}]},
                    }
                )
                await svc.endpoint_admin.create(body, ADMIN_USER)
            await asyncio.to_thread(self.store.set_setting, _DEFAULT_ENDPOINT_CREATED, "1")
        if settings.config_file:
            await apply_config_file(settings.config_file, svc.endpoint_admin)
        new_admin_token = await svc.tokens.bootstrap_admin(settings.admin_token)
        if new_admin_token:
            _print_admin_banner(settings, new_admin_token)

    async def stop(self) -> None:
        """Stop model workers and close the store (after in-flight requests have drained)."""
        await self.services.queries.recorder.close()  # queued usage/payload rows first
        await self.services.sync.close()
        await self.services.queries.limits.close()
        await self.providers.close()
        await self.sessions.close()
        await asyncio.to_thread(self.store.close)


def _recorder(settings: Settings, store: Store) -> Recorder:
    """Metrics for every query; usage and payload rows through one batching writer."""
    when_full = "drop" if settings.record_queue_full == "drop" else "wait"
    recorder = Recorder(
        RecordWriter(store.engine),
        Metrics(),
        queue_size=settings.record_queue_size,
        when_full=when_full,
    )
    recorder.start()
    return recorder


def _guardrails(settings: Settings, registry: EndpointRegistry) -> Guardrails:
    name = settings.guardrail_endpoint
    return Guardrails(Judge(registry, name) if name else None)


async def _workspace_id(store: Store) -> str:
    value = await asyncio.to_thread(store.get_setting, "workspace_id")
    if value is None:
        value = str(secrets.randbelow(9 * 10**15) + 10**15)
        await asyncio.to_thread(store.set_setting, "workspace_id", value)
    return value


def _print_admin_banner(settings: Settings, token: str) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(
        "\nmodelyard created an admin token. It is shown only this once; keep it safe.\n\n"
        f"    export DATABRICKS_HOST=http://{host}:{settings.port}\n"
        f"    export DATABRICKS_TOKEN={token}\n",
        file=sys.stdout,
        flush=True,
    )
