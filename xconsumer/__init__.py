"""xconsumer: spread long-running workers across a cluster of processes with ZooKeeper."""

__version__ = "0.1.0"
