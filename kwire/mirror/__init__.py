"""`kwire mirror`: MirrorMaker 2 between Kafka-compatible clusters (kwire or not).

- kwire.mirror.config: the MM2 properties file, flows and their settings (no I/O);
- kwire.mirror.policy: remote and internal topic names (DefaultReplicationPolicy,
  IdentityReplicationPolicy);
- kwire.mirror.offsets: offset syncs, checkpoints, stored progress and the translation of
  group offsets (no I/O);
- kwire.mirror.clients: the clients of a flow's two clusters, and stop-aware waits on them;
- kwire.mirror.flow: one flow's copying and its stored progress;
- kwire.mirror.checkpoints: one flow's checkpoints and the sync of groups to the target;
- kwire.mirror.runner: every enabled flow in one loop, until stopped.
"""
