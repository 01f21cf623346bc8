"""Topics and groups through Kafka's admin APIs (kafka-python's KafkaAdminClient): create,
list, describe and delete topics, refusals, and the groups SQL and Kafka share. Prints
"admin ok".

Usage: python kafka_admin.py <bootstrap>
"""

import sys

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    InvalidConfigurationError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

bootstrap = sys.argv[1]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
admin.create_topics([
    NewTopic('admin_a', num_partitions=3, replication_factor=1),
    NewTopic('admin_b', num_partitions=-1, replication_factor=-1,
             topic_configs={'retention.ms': '3600000', 'cleanup.policy': 'delete'}),
])
topics = admin.list_topics()
check({'admin_a', 'admin_b', 'clicks'} <= set(topics), f'topics: {topics}')
described = {t['name']: t for t in admin.describe_topics(['admin_a', 'admin_b'])}
check(len(described['admin_a']['partitions']) == 3, f'admin_a: {described["admin_a"]}')
check(len(described['admin_b']['partitions']) == 1, f'admin_b: {described["admin_b"]}')

for topic, error in [
    (NewTopic('admin_a', num_partitions=1, replication_factor=1), TopicAlreadyExistsError),
    (NewTopic('admin_c', num_partitions=1, replication_factor=3), InvalidReplicationFactorError),
    (NewTopic('admin_d', num_partitions=1, replication_factor=1,
              topic_configs={'cleanup.policy': 'compact,delete'}), InvalidConfigurationError),
]:
    try:
        admin.create_topics([topic])
        check(False, f'{topic.name} was created')
    except error:
        pass

# Configs as Kafka names them: what the topic was created with, and the node's.
configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'admin_b')], config_filter='all')
topic_configs = configs['topic']['admin_b']
check(topic_configs['retention.ms']['value'] == '3600000', f'admin_b configs: {topic_configs}')
check(topic_configs['cleanup.policy']['value'] == 'delete', f'admin_b configs: {topic_configs}')
broker = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, '1')], config_filter='all')
check(broker['broker']['1']['num.partitions']['value'] == '1', f'broker configs: {broker}')
cluster = admin.describe_cluster()
check(len(cluster['brokers']) == 1 and cluster['controller_id'] == 1, f'cluster: {cluster}')

# validate_only checks and creates nothing.
admin.create_topics([NewTopic('admin_e', num_partitions=2, replication_factor=1)], validate_only=True)
check('admin_e' not in admin.list_topics(), 'validate_only created a topic')

admin.delete_topics(['admin_a', 'admin_b'])
check(not {'admin_a', 'admin_b'} & set(admin.list_topics()), 'deleted topics listed')
try:
    admin.delete_topics(['admin_a'])
    check(False, 'a deleted topic was deleted again')
except UnknownTopicOrPartitionError:
    pass

# Groups: the SQL subscription is listed, and a Kafka group with committed offsets too.
consumer = KafkaConsumer('clicks', bootstrap_servers=bootstrap, group_id='kafka_group',
                         auto_offset_reset='earliest', consumer_timeout_ms=6000)
read = sum(1 for _ in consumer)
consumer.commit()
consumer.close()
check(read == 2, f'read {read} records')
groups = {g['group_id'] for g in admin.list_groups()}
check({'billing', 'kafka_group'} <= groups, f'groups: {groups}')
offsets = admin.list_group_offsets('kafka_group')['kafka_group']
check(sum(o.offset for o in offsets.values()) == 2, f'offsets: {offsets}')
billing = admin.list_group_offsets('billing')['billing']
check(sum(o.offset for o in billing.values()) == 1, f'billing: {billing}')
described = admin.describe_groups(['kafka_group'])['kafka_group']
check(described['group_state'] == 'Empty', f'described: {described}')
admin.close()
print('admin ok')
