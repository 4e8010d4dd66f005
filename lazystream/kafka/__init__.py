"""Kafka client set-up shared by every layer that talks to the brokers (the stream app, the operations
commands, the testing kit): the ``kafka.security`` settings turned into client arguments and checked against
the brokers (:mod:`~lazystream.kafka.security`), and the admin and group-less clients of the operations
commands (:mod:`~lazystream.kafka.clients`). What the clients are used for lives with their users.
"""
