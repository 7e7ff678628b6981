"""Everything that talks to an LLM: the litellm client, the gateway every call takes, and what is asked of it.

One path for every call: ``LLMGateway`` looks in the ``ResponseCache``, else calls the ``LLM`` (``LiteLLMClient``,
which retries and translates litellm's errors into ``core.errors``), and writes a ``Ledger`` line either way.
``rules`` asks the large model for classification rules; ``labeling`` builds the labeling prompt and parses a
reply into a class or a recorded failure; ``fanout`` runs labeling in forked worker processes. Which model
labels which set is ``core.run``'s decision.
"""

from core.llm.cache import ResponseCache
from core.llm.client import LLM, Endpoint, LiteLLMClient, LLMOptions
from core.llm.fanout import LabelWorker, WorkerFactory, label_in_processes
from core.llm.gateway import LLMGateway
from core.llm.labeling import LabelPrompt, label_many, load_labels
from core.llm.ledger import Ledger, cost_of, totals
from core.llm.rules import RulesResult, create_rules

__all__ = [
    "LLM",
    "Endpoint",
    "LLMGateway",
    "LLMOptions",
    "LabelPrompt",
    "LabelWorker",
    "Ledger",
    "LiteLLMClient",
    "ResponseCache",
    "RulesResult",
    "WorkerFactory",
    "cost_of",
    "create_rules",
    "label_in_processes",
    "label_many",
    "load_labels",
    "totals",
]
