"""Stream a reply from any OpenAI-compatible server (OpenAI, gateways, vLLM, Ollama, llama.cpp).

Usage is requested in the final chunk (`stream_options`); provider failures become a
ProviderError whose text a person can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from ..tools import ToolSpec
from ..vocabulary import FinishReason
from . import Agent, Completion, Generation, ModelMessages, ProviderError, ToolInput
from .attachments import attached, is_image, message_text, without_files

TRANSPORT_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "h11"}


def person_readable(exc: Exception, started: bool = True) -> str:
    """What went wrong, for a person; `started`: whether any of the reply had arrived."""
    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError) and not started:
        return f"Could not reach the model: {exc.__cause__ or exc}."
    if isinstance(exc, openai.AuthenticationError):
        return "The model provider rejected the API key (check OPENAI_API_KEY)."
    if isinstance(exc, openai.RateLimitError):
        return "The model provider is rate-limiting requests right now; try again in a moment."
    if isinstance(exc, openai.APITimeoutError):
        return "The model provider took too long to answer."
    if isinstance(exc, openai.APIConnectionError):
        return "The connection to the model provider was lost."
    if isinstance(exc, openai.BadRequestError):
        text = str(exc).lower()
        if "context" in text or "too long" in text or "maximum" in text:
            return "The conversation is too long for this model; start a new chat."
        return "The model provider refused the request."
    if isinstance(exc, openai.APIStatusError):
        return f"The model provider answered with an error (HTTP {exc.status_code})."
    return "The model provider failed."


def as_params(messages: list[dict[str, Any]]) -> list[ChatCompletionMessageParam]:
    """Our role/content dicts are exactly the SDK's message params (its TypedDicts, to mypy)."""
    return cast(list[ChatCompletionMessageParam], messages)


def with_attachments(message: dict[str, Any]) -> dict[str, Any]:
    """A message with files in the OpenAI shape: one text part (the message and its documents'
    text), then each image as an `image_url` part carrying its bytes (a `data:` URL)."""
    files = attached(message)
    if not files:
        return message
    images = [file for file in files if is_image(file)]
    text = message_text(message)
    if not images:
        return {**without_files(message), "content": text}
    from ..files import data_url  # the bytes are in the database (the producer has an app context)

    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": data_url(file["id"])}} for file in images]
    return {**without_files(message), "content": parts}


def client_for(config: dict) -> openai.OpenAI:
    """A client for one call; use it as a context manager so its connections are closed."""
    return openai.OpenAI(
        api_key=config["OPENAI_API_KEY"],
        base_url=config.get("OPENAI_BASE_URL"),
        timeout=config["OPENAI_TIMEOUT_SECONDS"],
        max_retries=0,
    )


def complete_openai(
    agent: Agent, messages: list[dict[str, str]], config: dict, max_tokens: int
) -> tuple[str, Completion]:
    """One short, non-streamed completion (chat titles)."""
    try:
        with client_for(config) as client:
            response = client.chat.completions.create(
                model=agent.model, messages=as_params(messages), max_tokens=max_tokens, temperature=0.2
            )
    except openai.OpenAIError as exc:
        raise ProviderError(person_readable(exc)) from exc
    usage = response.usage
    text = response.choices[0].message.content if response.choices else ""
    return text or "", Completion(
        FinishReason.STOP, usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None
    )


def generate_openai(agent: Agent, history: ModelMessages, config: dict, tools: Sequence[ToolSpec] = ()) -> Generation:
    """One streamed model step. Tool-call deltas (parallel calls interleave by `index`) become
    ToolInput pieces carrying their call's id and our name for the tool."""
    messages = [{"role": "system", "content": agent.system_prompt}, *map(with_attachments, history)]
    finish_reason = FinishReason.STOP
    usage = None
    started = False
    our_names = {tool.model_name: tool.name for tool in tools}
    calls: dict[int, tuple[str, str]] = {}  # index -> (toolCallId, name)
    with_tools: dict[str, Any] = (
        {"tools": cast(list[ChatCompletionToolParam], [tool.as_openai() for tool in tools])} if tools else {}
    )
    try:
        with (
            client_for(config) as client,
            client.chat.completions.create(
                model=agent.model,
                messages=as_params(messages),
                temperature=agent.temperature,
                max_tokens=agent.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                **with_tools,
            ) as stream,
        ):
            for chunk in stream:
                started = True
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
                    for call in (choice.delta.tool_calls or ()) if choice.delta else ():
                        if call.index not in calls:
                            name = call.function.name if call.function and call.function.name else "unknown"
                            calls[call.index] = (call.id or f"call_{call.index}", our_names.get(name, name))
                        call_id, name = calls[call.index]
                        arguments = call.function.arguments if call.function else None
                        yield ToolInput(call_id, name, arguments or "")
                    if choice.finish_reason:
                        finish_reason = FinishReason.LENGTH if choice.finish_reason == "length" else FinishReason.STOP
    except openai.OpenAIError as exc:
        raise ProviderError(person_readable(exc, started)) from exc
    except Exception as exc:
        # A body that breaks off mid-stream surfaces as the HTTP library's own error, which openai
        # does not wrap (httpx in openai 1.x/2.x, httpx2 in 3.x).
        if type(exc).__module__.split(".")[0] in TRANSPORT_MODULES:
            raise ProviderError("The connection to the model provider was lost mid-reply.") from exc
        raise
    yield Completion(
        finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
    )
