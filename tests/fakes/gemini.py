"""Gemini's API as Google AI Studio and Vertex AI serve it, and Google's OAuth token endpoint.

Reference pages checked:
- Google's own SDK, googleapis/python-genai (`google/genai/models.py`, `types.py`,
  `_transformers.py`): the paths (`models/{model}:generateContent`, `:streamGenerateContent`
  with `alt=sse`, `:batchEmbedContents`; Vertex `publishers/google/models/{model}:predict`, or
  `:embedContent` for Gemini embedding models after gemini-embedding-001), and which request,
  `generationConfig`, Part, FunctionCall, FunctionResponse (`output`/`error` convention) and
  embedding fields each platform takes.
- Vertex AI REST reference: GenerateContentRequest (contents, tools, toolConfig, safetySettings,
  systemInstruction, generationConfig, cachedContent, labels, modelArmorConfig) and
  GenerationConfig; the Generative Language API's GenerateContentRequest.
- ai.google.dev/gemini-api/docs/thought-signatures: signed function calls must come back with
  their signature (Gemini 3 refuses the request otherwise; only the first of parallel calls is
  signed), and the placeholder for calls that have none.
- developers.google.com/identity/protocols/oauth2/service-account: the JWT-bearer grant
  (form body `grant_type`, `assertion`; RS256 JWT with iss, scope, aud (always
  https://oauth2.googleapis.com/token), iat, exp at most an hour later) and its answer
  `{access_token, expires_in, token_type}`.
- cloud.google.com/apis/design/errors and google.rpc.Code: `{"error": {"code", "message",
  "status"}}` with the canonical status names.
- Databricks' API reference for GoogleCloudVertexAiConfig (private_key, project_id, region).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, json_response, sse

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The documented `aud` of every grant, whichever URL the token request is sent to.
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
SKIP_SIGNATURE = "skip_thought_signature_validator"
# A prompt the fake "model" refuses, to exercise the safety finish reason.
UNSAFE_PROMPT = "unsafe"
# A prompt whose stream fails after its first event, with an error object as the last event.
FAILING_PROMPT = "fail mid-stream"
OVERLOADED = {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}

REQUEST_FIELDS = {
    "contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
    "generationConfig", "cachedContent", "serviceTier",
}  # fmt: skip
VERTEX_REQUEST_FIELDS = REQUEST_FIELDS | {"labels", "modelArmorConfig"}
PART_DATA = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
}  # fmt: skip
PART_FIELDS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata", "mediaResolution"}
GENERATION_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "speechConfig", "thinkingConfig", "imageConfig", "mediaResolution",
}  # fmt: skip
STUDIO_GENERATION_FIELDS = GENERATION_FIELDS | {"enableEnhancedCivicAnswers"}
VERTEX_GENERATION_FIELDS = GENERATION_FIELDS | {"routingConfig", "modelConfig", "audioTimestamp"}
MIME_TYPES = {"text/plain", "application/json", "text/x.enum"}
TOOL_FIELDS = {
    "functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution",
    "urlContext", "retrieval", "computerUse", "fileSearch", "googleMaps", "enterpriseWebSearch",
}  # fmt: skip
DECLARATION_FIELDS = {
    "name", "description", "parameters", "parametersJsonSchema", "response",
    "responseJsonSchema", "behavior",
}  # fmt: skip
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
STUDIO_EMBED_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality"}
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


class FakeGemini(FakeUpstream):
    """AI Studio paths (key `api_key`) and Vertex paths (tokens this fake issued) in one server.

    For Vertex, `public_key_pem` and `client_email` are the test service account's: the token
    endpoint at `/token` only answers grants that account signed.
    """

    def __init__(
        self,
        api_key: str,
        *,
        public_key_pem: str = "",
        client_email: str = "",
        project: str = "my-project",
        region: str = "us-central1",
        sign_calls: bool = True,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.public_key_pem = public_key_pem
        self.client_email = client_email
        self.project = project
        self.region = region
        self.sign_calls = sign_calls  # like Gemini 3: calls are signed, and checked on return
        self.token_lifetime = 3600
        self.tokens: dict[str, float] = {}  # access token → expiry
        self.token_requests = 0
        self.signatures: set[str] = set()

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1beta/models/{target}", self.studio),
            web.post(
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}",
                self.vertex,
            ),
            web.post("/token", self.token),
        ]

    def error_response(self, status: int, message: str) -> web.Response:
        name = STATUS_NAMES.get(status, "UNKNOWN")
        return json_response(
            {"error": {"code": status, "message": message, "status": name}}, status
        )

    # -- entry points --------------------------------------------------------------------------

    async def studio(self, request: web.Request) -> web.StreamResponse:
        self.expect("key" not in request.query, "the API key must not be in the URL")
        key = request.headers.get("x-goog-api-key")
        self.expect(key, "the x-goog-api-key header is missing")
        if key != self.api_key:
            return self.error_response(400, "API key not valid. Please pass a valid API key.")
        model, method = self._target(request)
        body = await self.json_body(request)
        if method == "batchEmbedContents":
            return self._batch_embed(model, body)
        return await self._generate(request, method, body, vertex=False)

    async def vertex(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.expect(auth.startswith("Bearer "), "Authorization must be 'Bearer <access token>'")
        expiry = self.tokens.get(auth.removeprefix("Bearer "))
        if expiry is None or expiry < time.time():
            return self.error_response(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        self.expect(request.match_info["project"] == self.project, "wrong project in the path")
        self.expect(request.match_info["location"] == self.region, "wrong location in the path")
        model, method = self._target(request)
        body = await self.json_body(request)
        if method == "predict":
            return self._predict(model, body)
        if method == "embedContent":
            return self._embed_content(body)
        return await self._generate(request, method, body, vertex=True)

    async def token(self, request: web.Request) -> web.Response:
        """The JWT-bearer grant: the assertion must be signed by the test service account."""
        self.token_requests += 1
        self.expect(
            request.content_type == "application/x-www-form-urlencoded",
            "the token request must be a form",
        )
        form = await request.post()
        self.expect(form.get("grant_type") == JWT_BEARER, f"grant_type must be {JWT_BEARER}")
        assertion = form.get("assertion")
        self.expect(isinstance(assertion, str), "assertion is missing")
        try:
            claims = jwt.decode(assertion, certs=self.public_key_pem, audience=TOKEN_AUDIENCE)
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            return _oauth_error(f"Invalid JWT Signature. ({exc})")
        if claims.get("iss") != self.client_email:
            return _oauth_error("Invalid grant: account not found")
        self.expect(SCOPE in str(claims.get("scope", "")).split(), f"scope must include {SCOPE}")
        self.expect(0 < claims["exp"] - claims["iat"] <= 3600, "exp must be within an hour of iat")
        access = f"ya29.fake-{uuid.uuid4().hex}"
        self.tokens[access] = time.time() + self.token_lifetime
        return json_response(
            {"access_token": access, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    # -- generateContent -----------------------------------------------------------------------

    async def _generate(
        self, request: web.Request, method: str, body: Json, *, vertex: bool
    ) -> web.StreamResponse:
        self.expect(method in ("generateContent", "streamGenerateContent"), f"no method {method}")
        self._check_request(body, vertex)
        prompt = _prompt(body)
        reply = script.reply(prompt)
        count = (body.get("generationConfig") or {}).get("candidateCount", 1)
        model = self._target(request)[0]
        if method == "streamGenerateContent":
            self.expect(request.query.get("alt") == "sse", "streaming needs ?alt=sse")
            events = self._events(prompt, reply, count, model)
            return await sse(request, ((None, e) for e in events))
        candidates = [self._candidate(prompt, reply, i, self._parts(reply)) for i in range(count)]
        return json_response({**self._envelope(model, reply), "candidates": candidates})

    def _check_request(self, body: Json, vertex: bool) -> None:
        self.expect_fields(body, VERTEX_REQUEST_FIELDS if vertex else REQUEST_FIELDS, "request")
        contents = body.get("contents")
        self.expect(isinstance(contents, list) and contents, "contents is required")
        for i, content in enumerate(contents):
            self._check_content(content, f"contents[{i}]")
        self._check_pairs(contents)
        system = body.get("systemInstruction")
        if system is not None:
            self.expect_fields(system, {"role", "parts"}, "systemInstruction")
            for part in system.get("parts") or []:
                self.expect_fields(part, {"text"}, "systemInstruction.parts[]")
        fields = VERTEX_GENERATION_FIELDS if vertex else STUDIO_GENERATION_FIELDS
        self._check_generation(body.get("generationConfig") or {}, fields)
        names = self._check_tools(body.get("tools") or [])
        self._check_tool_config(body.get("toolConfig"), names)

    def _check_content(self, content: Any, where: str) -> None:
        self.expect_fields(content, {"role", "parts"}, where)
        self.expect(content.get("role") in ("user", "model"), f"{where}.role must be user or model")
        parts = content.get("parts")
        self.expect(isinstance(parts, list) and parts, f"{where}.parts must not be empty")
        for j, part in enumerate(parts):
            at = f"{where}.parts[{j}]"
            self.expect_fields(part, PART_FIELDS, at)
            self.expect(len(PART_DATA & set(part)) == 1, f"{at} needs exactly one kind of data")
            if "text" in part:
                self.expect(isinstance(part["text"], str), f"{at}.text must be a string")
            if "functionCall" in part:
                call = part["functionCall"]
                self.expect_fields(call, {"id", "name", "args"}, f"{at}.functionCall")
                self.expect(
                    isinstance(call.get("name"), str), f"{at}.functionCall.name is required"
                )
                self.expect(isinstance(call.get("args", {}), dict), f"{at}.functionCall.args")
            if "functionResponse" in part:
                result = part["functionResponse"]
                allowed = {"id", "name", "response", "parts", "willContinue", "scheduling"}
                self.expect_fields(result, allowed, f"{at}.functionResponse")
                self.expect(isinstance(result.get("name"), str), f"{at}.functionResponse.name")
                self.expect(
                    isinstance(result.get("response"), dict),
                    f"{at}.functionResponse.response must be an object",
                )

    def _check_pairs(self, contents: list[Json]) -> None:
        """Each function-call turn is answered, in the next turn, by one response per call."""
        for i, content in enumerate(contents):
            calls = [p["functionCall"] for p in content["parts"] if "functionCall" in p]
            if not calls:
                continue
            self._check_signature(content["parts"], f"contents[{i}]")
            if i + 1 == len(contents):
                continue
            answered = [
                p["functionResponse"] for p in contents[i + 1]["parts"] if "functionResponse" in p
            ]
            self.expect(
                sorted(c["name"] for c in calls) == sorted(r["name"] for r in answered),
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn.",
            )

    def _check_signature(self, parts: list[Json], where: str) -> None:
        if not self.sign_calls:
            return
        first = next(p for p in parts if "functionCall" in p)
        signature = first.get("thoughtSignature")
        self.expect(
            signature == SKIP_SIGNATURE or signature in self.signatures,
            f"Function call in {where} is missing a thought_signature",
        )

    def _check_generation(self, config: Json, allowed: set[str]) -> None:
        self.expect_fields(config, allowed, "generationConfig")
        stops = config.get("stopSequences", [])
        self.expect(
            isinstance(stops, list) and len(stops) <= 5 and all(isinstance(s, str) for s in stops),
            "stopSequences takes up to 5 strings",
        )
        self.expect(config.get("responseMimeType", "text/plain") in MIME_TYPES, "responseMimeType")
        self.expect(
            not ("responseSchema" in config and "responseJsonSchema" in config),
            "responseSchema and responseJsonSchema are mutually exclusive",
        )
        if "responseSchema" in config or "responseJsonSchema" in config:
            self.expect(
                config.get("responseMimeType") == "application/json",
                "a response schema needs responseMimeType application/json",
            )
        for name in ("candidateCount", "maxOutputTokens", "topK", "seed"):
            self.expect(isinstance(config.get(name, 1), int), f"{name} must be an integer")

    def _check_tools(self, tools: Any) -> set[str]:
        self.expect(isinstance(tools, list), "tools must be a list")
        names: set[str] = set()
        for i, tool in enumerate(tools):
            self.expect_fields(tool, TOOL_FIELDS, f"tools[{i}]")
            for j, declaration in enumerate(tool.get("functionDeclarations") or []):
                at = f"tools[{i}].functionDeclarations[{j}]"
                self.expect_fields(declaration, DECLARATION_FIELDS, at)
                name = declaration.get("name")
                self.expect(isinstance(name, str) and FUNCTION_NAME.match(name), f"{at}.name")
                self.expect(
                    not ("parameters" in declaration and "parametersJsonSchema" in declaration),
                    f"{at}: parameters and parametersJsonSchema are mutually exclusive",
                )
                names.add(name)
        return names

    def _check_tool_config(self, config: Any, names: set[str]) -> None:
        if config is None:
            return
        self.expect_fields(config, {"functionCallingConfig", "retrievalConfig"}, "toolConfig")
        calling = config.get("functionCallingConfig") or {}
        self.expect_fields(calling, {"mode", "allowedFunctionNames"}, "functionCallingConfig")
        mode = calling.get("mode")
        self.expect(mode in ("AUTO", "ANY", "NONE", "VALIDATED"), "functionCallingConfig.mode")
        allowed = calling.get("allowedFunctionNames")
        if allowed is not None:
            self.expect(mode in ("ANY", "VALIDATED"), "allowedFunctionNames needs mode ANY")
            self.expect(set(allowed) <= names, "allowedFunctionNames names undeclared functions")

    # -- answers -------------------------------------------------------------------------------

    def _parts(self, reply: script.Reply) -> list[Json]:
        if not reply.calls:
            return [{"text": reply.text}]
        parts = []
        for n, call in enumerate(reply.calls):
            part: Json = {"functionCall": {"name": call.name, "args": call.arguments}}
            if self.sign_calls and n == 0:  # parallel calls: only the first is signed
                signature = f"sig-{uuid.uuid4().hex}"
                self.signatures.add(signature)
                part["thoughtSignature"] = signature
            parts.append(part)
        return parts

    def _candidate(
        self, prompt: script.Prompt, reply: script.Reply, index: int, parts: list[Json]
    ) -> Json:
        candidate: Json = {"finishReason": _FINISH[reply.finish]}
        if prompt.last_user_text == UNSAFE_PROMPT and not prompt.tool_results:
            candidate["finishReason"] = "SAFETY"  # blocked: no content at all
        else:
            candidate["content"] = {"role": "model", "parts": parts}
        if index:  # proto3 JSON leaves out zero values, index 0 included
            candidate["index"] = index
        return candidate

    def _envelope(self, model: str, reply: script.Reply, done: bool = True) -> Json:
        completion = reply.completion_tokens if done else 0
        return {
            "usageMetadata": {
                "promptTokenCount": reply.prompt_tokens,
                "candidatesTokenCount": completion,
                "totalTokenCount": reply.prompt_tokens + completion,
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:20],
        }

    def _events(
        self, prompt: script.Prompt, reply: script.Reply, count: int, model: str
    ) -> Iterator[Json]:
        if reply.calls:  # function calls arrive whole, in one event with the finish reason
            parts = self._parts(reply)
            candidates = [self._candidate(prompt, reply, i, parts) for i in range(count)]
            yield {**self._envelope(model, reply), "candidates": candidates}
            return
        words = reply.words() if reply.text else [""]
        for n, word in enumerate(words):
            last = n == len(words) - 1
            candidates = []
            for i in range(count):
                candidate = self._candidate(prompt, reply, i, [{"text": word}])
                if not last:
                    candidate.pop("finishReason")
                candidates.append(candidate)
            yield {**self._envelope(model, reply, done=last), "candidates": candidates}
            if prompt.last_user_text == FAILING_PROMPT:
                yield {"error": OVERLOADED}
                return

    # -- embeddings ----------------------------------------------------------------------------

    def _batch_embed(self, model: str, body: Json) -> web.Response:
        self.expect_fields(body, {"requests"}, "request")
        requests = body.get("requests")
        self.expect(isinstance(requests, list) and requests, "requests is required")
        vectors = []
        for i, one in enumerate(requests):
            self.expect_fields(one, STUDIO_EMBED_FIELDS, f"requests[{i}]")
            self.expect(one.get("model") == f"models/{model}", f"requests[{i}].model")
            text = self._embed_text(one.get("content"), f"requests[{i}].content")
            vectors.append({"values": _vector(text, one.get("outputDimensionality"))})
        return json_response({"embeddings": vectors})

    def _predict(self, model: str, body: Json) -> web.Response:
        self.expect_fields(body, {"instances", "parameters"}, "request")
        instances = body.get("instances")
        self.expect(isinstance(instances, list) and instances, "instances is required")
        if model.startswith("gemini-"):
            self.expect(len(instances) == 1, f"{model} takes one instance per request")
        parameters = body.get("parameters") or {}
        self.expect_fields(parameters, {"autoTruncate", "outputDimensionality"}, "parameters")
        predictions = []
        for i, instance in enumerate(instances):
            self.expect_fields(
                instance, {"content", "task_type", "title", "mimeType"}, f"instances[{i}]"
            )
            text = instance.get("content")
            self.expect(isinstance(text, str), f"instances[{i}].content must be a string")
            statistics = {"token_count": len(text.split()), "truncated": False}
            values = _vector(text, parameters.get("outputDimensionality"))
            predictions.append({"embeddings": {"values": values, "statistics": statistics}})
        chars = sum(len(i["content"]) for i in instances)
        return json_response(
            {"predictions": predictions, "metadata": {"billableCharacterCount": chars}}
        )

    def _embed_content(self, body: Json) -> web.Response:
        self.expect_fields(body, {"content", "embedContentConfig"}, "request")
        config = body.get("embedContentConfig") or {}
        allowed = {"taskType", "title", "outputDimensionality", "autoTruncate", "documentOcr"}
        self.expect_fields(config, allowed, "embedContentConfig")
        text = self._embed_text(body.get("content"), "content")
        tokens = len(text.split())
        return json_response(
            {
                "embedding": {"values": _vector(text, config.get("outputDimensionality"))},
                "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens},
            }
        )

    def _embed_text(self, content: Any, where: str) -> str:
        self.expect_fields(content, {"role", "parts"}, where)
        parts = content.get("parts") or []
        self.expect(parts and all(isinstance(p.get("text"), str) for p in parts), f"{where}.parts")
        return "".join(p["text"] for p in parts)

    # -- helpers -------------------------------------------------------------------------------

    def _target(self, request: web.Request) -> tuple[str, str]:
        target = request.match_info["target"]
        self.expect(":" in target, "the path must end in {model}:{method}")
        model, method = target.rsplit(":", 1)
        return model, method


def _prompt(body: Json) -> script.Prompt:
    contents = body["contents"]
    last = contents[-1]
    results = [
        _result_text(p["functionResponse"]["response"])
        for p in last["parts"]
        if "functionResponse" in p
    ]
    user_texts = [
        "".join(p["text"] for p in c["parts"] if "text" in p)
        for c in contents
        if c["role"] == "user" and any("text" in p for p in c["parts"])
    ]
    config = body.get("generationConfig") or {}
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = calling.get("allowedFunctionNames")
    tools = [
        script.Tool(d["name"], d.get("parametersJsonSchema") or d.get("parameters") or {})
        for t in body.get("tools") or []
        for d in t.get("functionDeclarations") or []
        if allowed is None or d["name"] in allowed
    ]
    system = body.get("systemInstruction")
    return script.Prompt(
        last_user_text=user_texts[-1] if user_texts else "",
        tool_results=results if last["role"] == "user" else [],
        tools=tools,
        tool_choice_none=calling.get("mode") == "NONE",
        wants_json=config.get("responseMimeType") == "application/json",
        max_tokens=config.get("maxOutputTokens"),
        stop=config.get("stopSequences") or [],
        system="".join(p["text"] for p in system["parts"]) if system else None,
    )


def _result_text(response: Json) -> str:
    output = response.get("output", response)
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def _vector(text: str, dimensions: int | None) -> list[float]:
    values = [float(len(text)), 0.5, -0.5]
    return values[:dimensions] if dimensions else values


def _oauth_error(description: str) -> web.Response:
    """The token endpoint's own error body (OAuth 2's, not the APIs')."""
    return json_response({"error": "invalid_grant", "error_description": description}, 400)
