"""Client request bodies (OpenAI-compatible) and the Router Node API body built from them.

Pure: validation errors become a 422 naming the field; chat messages become one prompt through
the pool's chat template.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import MAX_ALIAS, ChatTemplate, Text
from gateway.errors import ApiError

T = TypeVar("T", bound=BaseModel)


class _Sampling(BaseModel):
    # Unknown OpenAI fields (n, user, logprobs, ...) are accepted and ignored.
    model_config = ConfigDict(extra="ignore")
    # Recorded with the request, even when unknown: bounded like a configured alias.
    model: Text = Field(min_length=1, max_length=MAX_ALIAS)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


def parse_body(raw: bytes, model: type[T]) -> T:
    """Validate a JSON body; a problem raises 422 whose ``details.field`` names the first bad
    field (``body`` when the body is no JSON object) and ``details.errors`` lists them all."""
    try:
        data = orjson.loads(raw) if raw else None
    except ValueError as e:
        raise ApiError(422, "invalid_body", f"body is not valid JSON: {e}", {"field": "body"}
                       ) from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "body must be a JSON object", {"field": "body"})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "body", "problem": err["msg"]}
            for err in e.errors()
        ]
        first = errors[0]
        raise ApiError(
            422, "invalid_body", f"{first['field']}: {first['problem']}",
            {"field": first["field"], "errors": errors},
        ) from None


def chat_prompt(messages: list[ChatMessage], template: ChatTemplate) -> str:
    """Render chat messages into one prompt.

    >>> chat_prompt([ChatMessage(role="user", content="hi")],
    ...             ChatTemplate(message="{role}: {content}\\n", suffix="assistant: "))
    'user: hi\\nassistant: '
    """
    parts = [template.message.format(role=m.role, content=m.text()) for m in messages]
    return "".join(parts) + template.suffix


def router_body(
    req: _Sampling,
    prompt: str,
    *,
    request_id: str,
    prompt_type: int,
    prompt_template: str,
    timeout: float,
) -> dict[str, Any]:
    """The Cortensor Router Node API body; ``client_reference`` is the gateway's request id."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "stream": req.stream,
        "prompt_type": prompt_type,
        "prompt_template": prompt_template,
        "timeout": max(1, int(timeout)),
        "client_reference": request_id,
    }
    for name in ("max_tokens", "temperature", "top_p", "top_k", "presence_penalty",
                 "frequency_penalty"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    return body


def completion_prompt(req: CompletionRequest) -> str:
    return req.prompt if isinstance(req.prompt, str) else "\n".join(req.prompt)
