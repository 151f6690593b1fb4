"""xconsumer: spread long-running workers across a cluster of processes with ZooKeeper."""

from .embed import Consumer
from .errors import CheckpointError, OwnershipLost, XConsumerError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "Consumer", "OwnershipLost", "XConsumerError", "__version__"]
