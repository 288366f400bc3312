"""tidings: actor-model publish/subscribe events for trio and anyio.

Named channels carry named events; callbacks (sync or async) or async iterators
receive them; a connection supervisor keeps the broker connection alive. The
embedded ``memory://`` broker is the default.

```python
import tidings

async with tidings.open_channels("memory://", namespace="shop") as channels:
    await channels.register("orders", "created", print)
    await channels.publish("orders", "created", {"id": 1})
```
"""

from .channels import Channels as Channels
from .channels import StatusType as StatusType
from .channels import open_channels as open_channels
from .errors import BrokerError as BrokerError
from .errors import CallbackError as CallbackError
from .errors import ProtocolError as ProtocolError
from .errors import PublishError as PublishError
from .errors import ReplyError as ReplyError
from .errors import Retry as Retry
from .errors import TidingsError as TidingsError
from .options import Options as Options
from .policies.backoff import Backoff as Backoff
from .policies.streams import DEFAULT_RETENTION as DEFAULT_RETENTION
from .policies.streams import Retention as Retention
from .protocols import Bytes as Bytes
from .protocols import Codec as Codec
from .protocols import Json as Json
from .pubsub import PubSub as PubSub
from .stats import Stats as Stats
from .store import Store as Store
from .store import create_store as create_store
from .types import Channel as Channel
from .types import ConnectedData as ConnectedData
from .types import DeadLetterData as DeadLetterData
from .types import DisconnectedData as DisconnectedData
from .types import Event as Event
from .types import Events as Events
from .types import GapData as GapData
from .types import SlowConsumerData as SlowConsumerData
from .types import StatusData as StatusData

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RETENTION",
    "Backoff",
    "BrokerError",
    "Bytes",
    "CallbackError",
    "Channel",
    "Channels",
    "Codec",
    "ConnectedData",
    "DeadLetterData",
    "DisconnectedData",
    "Event",
    "Events",
    "GapData",
    "Json",
    "Options",
    "ProtocolError",
    "PubSub",
    "PublishError",
    "ReplyError",
    "Retention",
    "Retry",
    "SlowConsumerData",
    "Stats",
    "StatusData",
    "StatusType",
    "Store",
    "TidingsError",
    "create_store",
    "open_channels",
]


def _fixup_module_metadata() -> None:
    """Show ``tidings`` as the module of every export, as trio does.

    Tracebacks, reprs and documentation then name ``tidings.Channels``, the
    public path, instead of a private module users should not import from.
    """
    import typing

    for name in __all__:
        obj = globals()[name]
        if not callable(obj):  # a constant (DEFAULT_RETENTION): its class names it
            continue
        if getattr(obj, "__module__", "").startswith("tidings."):
            if isinstance(obj, type) and "__annotations__" in vars(obj):
                # Resolved while the defining module is still known: typing tools
                # (get_type_hints, dataclass converters) look names up there.
                obj.__annotations__ = typing.get_type_hints(obj)
            obj.__module__ = "tidings"


_fixup_module_metadata()
del _fixup_module_metadata
