"""kwire.testing: a real kwire broker (or a cluster of them) inside a test suite.

    from kwire.testing import Broker, Cluster

    with Broker() as broker:                  # `python -m kwire serve` in a temp dir
        Producer({"bootstrap.servers": broker.bootstrap})
        broker.inject_fault("Produce", 2, error="NOT_LEADER_OR_FOLLOWER")

    with Cluster(size=3) as cluster:          # 3 brokers and a real ZooKeeper
        cluster.brokers[0].kill()

pytest users get the same as fixtures (kwire_broker, kwire_cluster) from kwire.testing.plugin,
registered through the pytest11 entry point. Standard library only at import time: the plugin
is loaded in every pytest run of an environment where kwire is installed.
"""

from kwire.testing.broker import AdminError, Broker, BrokerStartError
from kwire.testing.cluster import Cluster
from kwire.testing.mirror import Mirror, MirrorStartError, mirror_properties
from kwire.testing.zookeeper import ZooKeeperServer, ZooKeeperUnavailable

__all__ = [
    "AdminError",
    "Broker",
    "BrokerStartError",
    "Cluster",
    "Mirror",
    "MirrorStartError",
    "ZooKeeperServer",
    "ZooKeeperUnavailable",
    "mirror_properties",
]
