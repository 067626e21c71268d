"""Agents: who people can chat with, and the one `generate()` shape every model speaks.

`generate()` yields text pieces as the model produces them and, last, one `Completion` with the
finish reason and the usage the provider reported (None where it reported none).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from ..vocabulary import MICROS_PER_CREDIT, FinishReason


class AgentConfigError(RuntimeError):
    """The agents file is unusable; the message names the file and the problem."""


class ProviderError(Exception):
    """A model call failed; `str(error)` is written for a person."""


@dataclass(frozen=True)
class Agent:
    slug: str
    name: str
    description: str
    model: str
    system_prompt: str
    temperature: float
    max_tokens: int
    price_prompt_per_1k: float
    price_completion_per_1k: float

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Cost in micro-credits, rounded up so no usage is ever free."""
        credits = (prompt_tokens * self.price_prompt_per_1k + completion_tokens * self.price_completion_per_1k) / 1000
        return math.ceil(credits * MICROS_PER_CREDIT)


@dataclass(frozen=True)
class Completion:
    finish_reason: FinishReason  # STOP or LENGTH
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


Generation = Generator["str | Completion", None, None]

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "slug": str,
    "name": str,
    "description": str,
    "model": str,
    "system_prompt": str,
    "temperature": (int, float),
    "max_tokens": int,
    "price_prompt_per_1k": (int, float),
    "price_completion_per_1k": (int, float),
}


def load_agents(path: str | Path) -> dict[str, Agent]:
    """Read and validate the agents file; raise AgentConfigError saying exactly what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentConfigError(f"Agents file {path} does not exist (set AGENTS_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"Agents file {path} is not valid TOML: {exc}") from None
    entries = data.get("agents")
    if not isinstance(entries, list) or not entries:
        raise AgentConfigError(f"Agents file {path} must define at least one [[agents]] table")
    agents: dict[str, Agent] = {}
    for index, entry in enumerate(entries, start=1):
        where = f"{path}, agent #{index}"
        for field, kind in REQUIRED_FIELDS.items():
            if field not in entry:
                raise AgentConfigError(f"{where}: missing `{field}`")
            if not isinstance(entry[field], kind) or isinstance(entry[field], bool):
                raise AgentConfigError(f"{where}: `{field}` has the wrong type ({entry[field]!r})")
        unknown = set(entry) - set(REQUIRED_FIELDS)
        if unknown:
            raise AgentConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        agent = Agent(**entry)
        if not agent.slug.replace("-", "").isalnum() or agent.slug != agent.slug.lower():
            raise AgentConfigError(f"{where}: slug {agent.slug!r} must be lowercase letters, digits and dashes")
        if agent.slug in agents:
            raise AgentConfigError(f"{where}: slug {agent.slug!r} is used twice")
        if agent.max_tokens <= 0 or agent.price_prompt_per_1k < 0 or agent.price_completion_per_1k < 0:
            raise AgentConfigError(f"{where}: max_tokens must be positive and prices not negative")
        agents[agent.slug] = agent
    return agents


def estimate_tokens(text: str) -> int:
    """Rough token count (about four characters a token) for when a provider reports none."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def generate(agent: Agent, history: list[dict[str, str]], config: dict) -> Generation:
    """Stream `agent`'s reply to `history` from the configured model (the demo one without a key)."""
    if config.get("OPENAI_API_KEY"):
        from .openai_provider import generate_openai

        return generate_openai(agent, history, config)
    from .demo import generate_demo

    return generate_demo(agent, history, config["DEMO_MODEL_WORDS"], config["DEMO_MODEL_DELAY_MS"])


TITLE_PROMPT = "Write a title of at most six words for this conversation. Answer with the title only."


def suggest_title(agent: Agent, question: str, answer: str, config: dict) -> tuple[str, Completion] | None:
    """A short chat title from the model, with its usage; None with the demo model (whose chats
    keep the first words of their first message) or when the model gives nothing usable."""
    if not config.get("OPENAI_API_KEY"):
        return None
    from .openai_provider import complete_openai

    conversation = f"User: {question[:1500]}\n\nAssistant: {answer[:1500]}"
    text, completion = complete_openai(
        agent,
        [{"role": "system", "content": TITLE_PROMPT}, {"role": "user", "content": conversation}],
        config,
        max_tokens=20,
    )
    title = clean_title(text)
    return (title, completion) if title else None


def clean_title(text: str) -> str:
    line = next((line for line in text.splitlines() if line.strip()), "")
    return line.strip().strip("\"'*#` ").rstrip(".:;!").strip()[:80]
