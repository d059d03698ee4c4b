"""chatbot: Claude, OpenAI, Ollama and OpenRouter behind one streaming interface.

One anyio actor per conversation, routed by a :class:`Supervisor` that you can embed
in any anyio program (asyncio or trio)::

    from chatbot import ProviderConfig, Supervisor

    async with Supervisor() as sup:
        await sup.connect("conv-1", ProviderConfig(provider="openai", api_key="sk-..."))
        reply = await sup.chat("conv-1", "hello")
"""

from ._config import Limits as Limits
from ._config import ProviderConfig as ProviderConfig
from ._config import Settings as Settings
from ._config import UpstreamPolicy as UpstreamPolicy
from ._errors import ActorCrashed as ActorCrashed
from ._errors import AuthenticationFailed as AuthenticationFailed
from ._errors import BadUpstreamResponse as BadUpstreamResponse
from ._errors import Busy as Busy
from ._errors import ChatbotError as ChatbotError
from ._errors import ConfigError as ConfigError
from ._errors import ConversationError as ConversationError
from ._errors import LimitExceeded as LimitExceeded
from ._errors import MissingApiKey as MissingApiKey
from ._errors import NotConnected as NotConnected
from ._errors import ProviderError as ProviderError
from ._errors import RateLimited as RateLimited
from ._errors import ShuttingDown as ShuttingDown
from ._errors import StoreError as StoreError
from ._errors import UnknownConversation as UnknownConversation
from ._errors import UnknownProvider as UnknownProvider
from ._errors import UpstreamRejected as UpstreamRejected
from ._errors import UpstreamTimeout as UpstreamTimeout
from ._errors import UpstreamUnavailable as UpstreamUnavailable
from ._handle import ConversationHandle as ConversationHandle
from ._handle import TurnStream as TurnStream
from ._messages import Message as Message
from ._messages import Reply as Reply
from ._messages import Role as Role
from ._messages import Usage as Usage
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStatistics as SupervisorStatistics

__version__ = "0.1.0"

__all__ = [
    "ActorCrashed",
    "AuthenticationFailed",
    "BadUpstreamResponse",
    "Busy",
    "ChatbotError",
    "ConfigError",
    "ConversationError",
    "ConversationHandle",
    "LimitExceeded",
    "Limits",
    "Message",
    "MissingApiKey",
    "NotConnected",
    "ProviderConfig",
    "ProviderError",
    "RateLimited",
    "Reply",
    "Role",
    "Settings",
    "ShuttingDown",
    "StoreError",
    "Supervisor",
    "SupervisorStatistics",
    "TurnStream",
    "UnknownConversation",
    "UnknownProvider",
    "UpstreamPolicy",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        try:
            _obj.__module__ = "chatbot"
        except TypeError:  # pragma: no cover - builtins
            pass
del _name, _obj
