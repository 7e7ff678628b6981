"""The wire protocols the oracle (a stand-in for a real LLM, answering from human labels) can speak.

``protocol_for(config)`` builds the one named by ``config.protocol``; each module says what of its provider's
API it covers and what it leaves out. ``handle`` is the request flow they all share.
"""

from __future__ import annotations

from oracle.config import OracleConfig
from oracle.protocols.anthropic import AnthropicProtocol
from oracle.protocols.azure import AzureProtocol
from oracle.protocols.base import HttpRequest, Reply, WireProtocol, handle, json_reply
from oracle.protocols.bedrock import BedrockProtocol
from oracle.protocols.gemini import GeminiProtocol
from oracle.protocols.ollama import OllamaProtocol
from oracle.protocols.openai import OpenAIProtocol

__all__ = ["HttpRequest", "Reply", "WireProtocol", "handle", "json_reply", "protocol_for"]

_BY_NAME: dict[str, type[WireProtocol]] = {
    cls.name: cls
    for cls in (OpenAIProtocol, AzureProtocol, AnthropicProtocol, BedrockProtocol, GeminiProtocol, OllamaProtocol)
}


def protocol_for(config: OracleConfig) -> WireProtocol:
    return _BY_NAME[config.protocol](config)
