"""Model providers behind one small protocol, and what makes calling them robust.

``create_provider(config, client)`` builds the adapter a :class:`ProviderConfig`
names (see ``_registry``); each adapter's ``stream(request)`` yields
:class:`TextDelta` values and one :class:`StreamEnd`. :func:`resilient_stream` adds
retries and deadlines, and :func:`collect` turns a stream into text plus usage.
No httpx exception leaves this package: every failure is a ``ProviderError``.
"""

from __future__ import annotations

from ._base import ChatRequest as ChatRequest
from ._base import Provider as Provider
from ._base import StreamEnd as StreamEnd
from ._base import StreamEvent as StreamEvent
from ._base import TextDelta as TextDelta
from ._registry import ProviderSpec as ProviderSpec
from ._registry import create_provider as create_provider
from ._registry import lookup_provider as lookup_provider
from ._registry import provider_specs as provider_specs
from ._resilience import collect as collect
from ._resilience import is_retryable as is_retryable
from ._resilience import resilient_stream as resilient_stream

__all__ = [
    "ChatRequest",
    "Provider",
    "ProviderSpec",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "collect",
    "create_provider",
    "is_retryable",
    "lookup_provider",
    "provider_specs",
    "resilient_stream",
]
