"""The simulated organization's price table and costs line items.

All prices are exact :class:`~decimal.Decimal` values in USD. They are *plausible*, not OpenAI's current list prices,
and are chosen so every unit price is a terminating decimal (costs are then exact Decimal sums).

Line item names follow the style seen in third-party mocks, ``"gpt-4o-2024-08-06, input"`` (ref
openai-usage-api.md §6, last bullet: the full set of real ``line_item`` strings is unknown). ``quantity_unit`` values
come from the SPEC enum (ref §1.6 ``organization.costs.result``: ``tokens``, ``1000_tokens``, ``duration_seconds``,
``duration_minutes``, ``duration_hours``, ``gibibyte_hours``, ``images``, ``characters``) or are ``None`` where
"no single supported unit applies" (tool calls, sessions, scale-tier units).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenPrice:
    """USD per 1M tokens for a chat/completions model (default tier)."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    audio_input: Decimal | None = None
    audio_output: Decimal | None = None


def _d(s: str) -> Decimal:
    return Decimal(s)


#: USD per 1M tokens, default service tier.
TOKEN_PRICES: dict[str, TokenPrice] = {
    "gpt-4o-2024-08-06": TokenPrice(_d("2.50"), _d("1.25"), _d("10.00")),
    "gpt-4o-mini-2024-07-18": TokenPrice(_d("0.15"), _d("0.075"), _d("0.60")),
    "o3-mini-2025-01-31": TokenPrice(_d("1.10"), _d("0.55"), _d("4.40")),
    "gpt-4.1-2025-04-14": TokenPrice(_d("2.00"), _d("0.50"), _d("8.00")),
    "gpt-4o-audio-preview-2024-12-17": TokenPrice(
        _d("2.50"), _d("1.25"), _d("10.00"), audio_input=_d("40.00"), audio_output=_d("80.00")
    ),
    "gpt-image-1": TokenPrice(_d("5.00"), _d("1.25"), _d("40.00")),
    "gpt-3.5-turbo-0125": TokenPrice(_d("0.50"), _d("0.50"), _d("1.50")),
    # embeddings / moderations (input only)
    "text-embedding-3-small": TokenPrice(_d("0.02"), _d("0.02"), _d("0")),
    "text-embedding-3-large": TokenPrice(_d("0.13"), _d("0.13"), _d("0")),
    "text-embedding-ada-002-v2": TokenPrice(_d("0.10"), _d("0.10"), _d("0")),
}

#: Price multiplier per service tier / batch (applied to every token price).
#: ``scale`` is billed as an org-level daily commitment instead (see :data:`SCALE_TIER_DAILY`).
TIER_MULTIPLIER: dict[str, Decimal] = {
    "default": _d("1"),
    "batch": _d("0.5"),
    "flex": _d("0.5"),
    "priority": _d("1.75"),
}

#: Scale-tier units are paid per day at the organization level, not per project (ref §4.8: "costs of Scale tier
#: bundles are attributed at the Org level, not project"), so their line item has ``project_id`` and
#: ``api_key_id`` null, and scale-tier tokens have no per-token line items (usage and costs do not reconcile).
SCALE_TIER_DAILY = _d("25.00")

#: Models whose usage is free (no costs line item): moderations.
FREE_MODELS = frozenset({"omni-moderation-latest", "text-moderation-latest"})

#: USD per image by (model, size).
IMAGE_PRICES: dict[tuple[str, str], Decimal] = {
    ("gpt-image-1", "1024x1024"): _d("0.042"),
    ("gpt-image-1", "1536x1024"): _d("0.063"),
    ("dall-e-3", "1024x1024"): _d("0.040"),
    ("dall-e-3", "1024x1792"): _d("0.080"),
    ("dall-e-2", "256x256"): _d("0.016"),
    ("dall-e-2", "512x512"): _d("0.018"),
}

#: USD per character of text-to-speech input.
SPEECH_PRICE_PER_CHAR: dict[str, Decimal] = {
    "tts-1": _d("0.000015"),
    "tts-1-hd": _d("0.00003"),
    "gpt-4o-mini-tts": _d("0.000012"),
}

#: USD per second of transcribed audio ($0.006 / minute).
TRANSCRIPTION_PRICE_PER_SECOND: dict[str, Decimal] = {
    "whisper-1": _d("0.0001"),
    "gpt-4o-transcribe": _d("0.0001"),
}

#: USD per web search tool call by search context size.
WEB_SEARCH_PRICE_PER_CALL: dict[str, Decimal] = {"low": _d("0.025"), "medium": _d("0.0275"), "high": _d("0.030")}
#: USD per file search tool call.
FILE_SEARCH_PRICE_PER_CALL = _d("0.0025")
#: USD per GiB-hour of vector store storage (~$0.096 per GiB-day; a terminating decimal on purpose).
VECTOR_STORE_PRICE_PER_GIB_HOUR = _d("0.004")
#: USD per code interpreter session.
CODE_INTERPRETER_PRICE_PER_SESSION = _d("0.03")

GIB = 1 << 30

# Line item names --------------------------------------------------------------------------------------------------

WEB_SEARCH_LINE_ITEM = "web search tool calls"
FILE_SEARCH_LINE_ITEM = "file search tool calls"
VECTOR_STORE_LINE_ITEM = "vector store storage"
CODE_INTERPRETER_LINE_ITEM = "code interpreter sessions"


def token_line_item(model: str, component: str, tier: str) -> str:
    """Name of a token line item.

    Args:
        model: model name.
        component: ``input``, ``cached input``, ``output``, ``audio input`` or ``audio output``.
        tier: ``default``, ``batch``, ``flex`` or ``priority``.

    Returns:
        ``"gpt-4o-2024-08-06, input"`` for the default tier, ``"gpt-4o-2024-08-06, batch input"`` otherwise.
    """
    prefix = "" if tier == "default" else f"{tier} "
    return f"{model}, {prefix}{component}"


def scale_tier_line_item(model: str) -> str:
    """Name of the org-level scale-tier commitment line item for a model."""
    return f"scale tier units, {model}"
