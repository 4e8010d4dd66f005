"""Operations on lazystream's Kafka side: tail, replay, topics (create, describe, scale).

These modules are what the ``lazystream tail|replay|topics`` commands run. They never join the worker's
consumer group as a member: reading is by manual assignment without a group id, and offsets are moved only
while the group has no live members.
"""
