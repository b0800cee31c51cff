"""Create the SCRAM user alice, a topic, and alice's ACLs, over the PLAINTEXT listener
(what kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[...]' and kafka-acls.sh do)."""

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
alice = UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"alice-secret")
for future in admin.alter_user_scram_credentials([alice]).values():
    future.result(10)
for future in admin.create_topics([NewTopic("orders", 3)]).values():
    future.result(10)
allow = [
    AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*", op, AclPermissionType.ALLOW)
    for op in (AclOperation.WRITE, AclOperation.READ)
] + [AclBinding(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice", "*",
                AclOperation.READ, AclPermissionType.ALLOW)]
for future in admin.create_acls(allow).values():
    future.result(10)
print("user alice, topic orders, 3 ACLs created")
