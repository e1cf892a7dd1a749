"""Endpoints as the API returns them (API.md section 4), with state derived live."""

from __future__ import annotations

from typing import Any

from modelyard.control.plaintext import redact_plaintexts
from modelyard.gateway.endpoints import LiveEndpoint, LiveEntity


def render_endpoint(live: LiveEndpoint, permission_level: str = "CAN_MANAGE") -> dict[str, Any]:
    """The endpoint JSON; entity and endpoint states come from the providers, never the store."""
    record = live.record
    entities = [_render_entity(e) for e in live.entities]
    body: dict[str, Any] = {
        "name": record.name,
        "id": record.id,
        "creator": record.creator,
        "creation_timestamp": record.created_ms,
        "last_updated_timestamp": record.updated_ms,
        "state": _endpoint_state(live),
        "task": record.task,
        "endpoint_type": record.endpoint_type,
        "config": {
            "config_version": record.config_version,
            "served_entities": entities,
            "traffic_config": record.config.get("traffic_config", {"routes": []}),
        },
        "tags": record.tags,
        "permission_level": permission_level,
        "route_optimized": record.route_optimized,
    }
    if record.ai_gateway:
        body["ai_gateway"] = record.ai_gateway
    if record.description:
        body["description"] = record.description
    return body


def _render_entity(entity: LiveEntity) -> dict[str, Any]:
    readiness = entity.readiness()
    return {
        **redact_plaintexts(entity.config),
        **entity.provider.entity_fields(),
        "name": entity.name,
        "state": {
            "deployment": readiness.deployment,
            "deployment_state_message": readiness.message,
        },
    }


def _endpoint_state(live: LiveEndpoint) -> dict[str, str]:
    states = [e.readiness() for e in live.entities]
    ready = all(e.readiness().ready for e in live.routed)
    if any(not s.settled and s.deployment == "DEPLOYMENT_FAILED" for s in states):
        update = "UPDATE_FAILED"
    elif any(not s.settled for s in states):
        update = "IN_PROGRESS"
    else:
        update = "NOT_UPDATING"
    return {"ready": "READY" if ready else "NOT_READY", "config_update": update}
