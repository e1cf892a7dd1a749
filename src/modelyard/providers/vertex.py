"""`google-cloud-vertex-ai`: Gemini on Vertex AI, authenticated as a service account.

Chat is `publishers/google/models/{model}:generateContent` (streamed:
`:streamGenerateContent?alt=sse`) under `projects/{project}/locations/{region}`; embeddings are
`:predict`, except for the Gemini embedding models after `gemini-embedding-001`, which take
`:embedContent`. Calls carry an OAuth access token that `google-auth` gets from the service
account's JWT-bearer grant; it is cached until shortly before it expires.

`private_key` holds the service account key. Databricks documents the field only as "a private
key for the service account", and a token cannot be had without the account's email, which
Databricks has no field for: so it takes the JSON key file as downloaded from the Cloud console
(it carries the email, key and token URI). A bare PEM private key works too, with the email in
our `client_email` field.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar

import orjson
from google.auth import crypt, exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from pydantic import Field

from modelyard.errors import BadRequest, UpstreamError
from modelyard.providers import gemini_wire
from modelyard.providers.base import Json
from modelyard.providers.external import ExternalContext, ProviderConfig
from modelyard.providers.gemini import GenerateContentProvider
from modelyard.schemas.endpoints import ExternalModel
from modelyard.schemas.query import EmbeddingRequest

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
# `:predict` takes up to 250 texts per call; the Gemini embedding models take one.
PREDICT_BATCH = 250
KEY_HELP = (
    "put the service account's JSON key file (IAM > Service accounts > Keys > Add key > JSON) "
    "in the secret"
)


class VertexConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"private_key": True}

    private_key: str | None = None
    private_key_plaintext: str | None = None
    project_id: str = Field(min_length=1)
    region: str = Field(pattern=r"^[a-z0-9-]+$")
    # Ours: the service account's email, needed only when private_key is a bare PEM key.
    client_email: str | None = None
    # Ours: the API's origin (default from the region) and the OAuth token endpoint.
    vertex_api_base: str | None = Field(default=None, pattern=r"^https?://")
    vertex_token_uri: str | None = Field(default=None, pattern=r"^https?://")


@dataclass(frozen=True)
class ServiceAccount:
    email: str
    private_key: str  # PEM
    key_id: str | None = None
    token_uri: str | None = None


def service_account_key(text: str, client_email: str | None) -> ServiceAccount:
    """The account in `private_key`: a JSON key file, or a PEM key plus `client_email`."""
    text = text.strip()
    if text.startswith("{"):
        return _from_json(text, client_email)
    if "-----BEGIN" in text and "PRIVATE KEY-----" in text:
        if not client_email:
            raise BadRequest(
                "private_key holds a bare PEM key, but a Vertex AI token also needs the "
                "service account's email: set google_cloud_vertex_ai_config.client_email, or "
                + KEY_HELP
                + "."
            )
        # A key copied out of the JSON file keeps its escaped newlines.
        return ServiceAccount(client_email, text.replace("\\n", "\n"))
    raise BadRequest(f"private_key is not a service account key: {KEY_HELP}.")


def _from_json(text: str, client_email: str | None) -> ServiceAccount:
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest(
            f"private_key starts like JSON but is not valid JSON: {KEY_HELP}."
        ) from None
    if not isinstance(info, dict) or info.get("type", "service_account") != "service_account":
        kind = info.get("type") if isinstance(info, dict) else type(info).__name__
        raise BadRequest(
            f"private_key is a '{kind}' credential, not a service account key: {KEY_HELP}."
        )
    missing = [k for k in ("client_email", "private_key") if not isinstance(info.get(k), str)]
    if missing:
        raise BadRequest(f"The service account key in private_key lacks {', '.join(missing)}.")
    if client_email and client_email != info["client_email"]:
        raise BadRequest(
            f"client_email '{client_email}' is not the key's account ({info['client_email']}); "
            "leave client_email out when private_key is a JSON key file."
        )
    return ServiceAccount(
        info["client_email"], info["private_key"], info.get("private_key_id"), info.get("token_uri")
    )


def _signer(account: ServiceAccount) -> crypt.Signer:
    try:
        return crypt.RSASigner.from_string(account.private_key, account.key_id)
    except (ValueError, TypeError):
        raise BadRequest(f"The private key in private_key cannot be read: {KEY_HELP}.") from None


class AccessTokens:
    """One service account's access tokens: fetched when missing or near expiry, one at a time."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._source: tuple[ServiceAccount, str] | None = None
        self._credentials: service_account.Credentials | None = None

    async def token(
        self, account: ServiceAccount, token_uri: str, upstream: str, timeout_s: float
    ) -> str:
        async with self._lock:
            if self._credentials is None or self._source != (account, token_uri):
                # A rotated secret or a new token URI: start over with new credentials.
                self._credentials = service_account.Credentials(
                    _signer(account), account.email, token_uri, scopes=[SCOPE]
                )
                self._source = (account, token_uri)
            credentials = self._credentials
            # `valid` is False from a few minutes before expiry, so a token never lapses mid-call.
            if not credentials.valid:
                await _refreshed(credentials, token_uri, upstream, timeout_s)
            return str(credentials.token)


def _refreshed(
    credentials: service_account.Credentials, token_uri: str, upstream: str, timeout_s: float
) -> Awaitable[None]:
    """The JWT-bearer exchange, in a thread (google-auth is blocking), with its errors as ours."""

    def refresh() -> None:
        try:
            # The entity's timeout bounds the exchange too (google-auth's default is 120 s).
            credentials.refresh(functools.partial(Request(), timeout=timeout_s))
        except exceptions.RefreshError as exc:
            reason = exc.args[0] if exc.args else exc
            raise UpstreamError(
                f"{upstream}: the token endpoint {token_uri} refused the service account: {reason}",
                status=502 if exc.retryable else 401,
                error_code=None if exc.retryable else "UNAUTHENTICATED",
                retryable=exc.retryable,
            ) from None
        except exceptions.TransportError as exc:
            raise UpstreamError(
                f"{upstream}: the token endpoint {token_uri} could not be reached ({exc}).",
                retryable=True,
            ) from None

    return asyncio.to_thread(refresh)


class VertexProvider(GenerateContentProvider):
    kind = "google-cloud-vertex-ai"
    config_key = "google_cloud_vertex_ai_config"
    config_model = VertexConfig
    config: VertexConfig

    def __init__(
        self, model: ExternalModel, config: ProviderConfig, context: ExternalContext
    ) -> None:
        super().__init__(model, config, context)
        self._tokens = AccessTokens()

    @classmethod
    def check(cls, model: ExternalModel, config: ProviderConfig) -> None:
        assert isinstance(config, VertexConfig)
        # A key in a secret is read at call time; one given in the config is checked now.
        if config.private_key_plaintext is not None:
            _signer(service_account_key(config.private_key_plaintext, config.client_email))

    @property
    def base(self) -> str:
        region = self.config.region
        # The global location has no regional host.
        host = (
            "aiplatform.googleapis.com"
            if region == "global"
            else f"{region}-aiplatform.googleapis.com"
        )
        return (self.config.vertex_api_base or f"https://{host}").rstrip("/")

    def url(self, method: str) -> str:
        c = self.config
        return (
            f"{self.base}/v1/projects/{c.project_id}/locations/{c.region}"
            f"/publishers/google/models/{self.model.name}:{method}"
        )

    async def headers(self) -> dict[str, str]:
        account = service_account_key(
            self.credential("private_key").value(), self.config.client_email
        )
        token_uri = self.config.vertex_token_uri or account.token_uri or DEFAULT_TOKEN_URI
        token = await self._tokens.token(account, token_uri, self.upstream, self.timeout_s)
        return {"Authorization": f"Bearer {token}"}

    async def embeddings(self, request: EmbeddingRequest) -> Json:
        texts = gemini_wire.embedding_inputs(request)
        extras = dict(request.model_extra or {})
        if _uses_embed_content(self.model.name):
            answers = [self._embed_content(text, extras) for text in texts]
        else:
            size = 1 if self.model.name.startswith("gemini-") else PREDICT_BATCH
            batches = [texts[i : i + size] for i in range(0, len(texts), size)]
            answers = [self._predict(batch, extras) for batch in batches]
        results = await asyncio.gather(*answers)
        vectors = [vector for batch, _ in results for vector in batch]
        tokens = sum(count for _, count in results)
        return gemini_wire.embedding_list(vectors, self.model.name, tokens, request.encoding_format)

    async def _predict(self, texts: list[str], extras: Json) -> tuple[list[list[float]], int]:
        """One `:predict` call: per-text fields (task_type, title) on each instance."""
        instance_keys = {"task_type", "title"}
        parameters = {k: v for k, v in extras.items() if k not in instance_keys | {"dimensions"}}
        if "dimensions" in extras:
            parameters["outputDimensionality"] = extras["dimensions"]
        per_text = {k: v for k, v in extras.items() if k in instance_keys}
        body: Json = {"instances": [{"content": text, **per_text} for text in texts]}
        if parameters:
            body["parameters"] = parameters
        answer = await self.post_json(self.call(self.url("predict"), body, await self.headers()))
        found = [p.get("embeddings") or {} for p in answer.get("predictions") or []]
        tokens = sum(int((e.get("statistics") or {}).get("token_count", 0)) for e in found)
        return [e.get("values") or [] for e in found], tokens

    async def _embed_content(self, text: str, extras: Json) -> tuple[list[list[float]], int]:
        """One `:embedContent` call (one text); extra params go to `embedContentConfig`."""
        config = {k: v for k, v in extras.items() if k != "dimensions"}
        if "dimensions" in extras:
            config["outputDimensionality"] = extras["dimensions"]
        body: Json = {"content": {"parts": [{"text": text}]}}
        if config:
            body["embedContentConfig"] = config
        call = self.call(self.url("embedContent"), body, await self.headers())
        answer = await self.post_json(call)
        values = (answer.get("embedding") or {}).get("values") or []
        return [values], int((answer.get("usageMetadata") or {}).get("promptTokenCount", 0))


def _uses_embed_content(model: str) -> bool:
    """Google's rule: Gemini embedding models other than gemini-embedding-001 embed by content."""
    return model.startswith("gemini-") and model != "gemini-embedding-001"
