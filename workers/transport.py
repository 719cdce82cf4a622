"""kombu's Redis transport, cheaper to publish through:

- one client per channel (and per connection pool: a reconnection makes a new one) for the
  commands it sends outside the event loop (publishing, queue sizes): the stock channel
  builds a new `redis.Redis` for each of them — most of the cost of a publish with redis-py
  6 and later;
- the routing table of an exchange (which queues a routing key goes to) read once, not on
  every publish — for the exchanges named in the transport option `fixed_exchanges` only:
  our task queues, whose bindings never change (workers/celery_app.py). A table known is also
  what keeps messages flowing should Redis lose the binding keys. Other exchanges — Celery's
  reply exchange, to which every `celery inspect` and Flower bind a queue of their own —
  are read on every publish, as kombu does.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "fixed_exchanges")
    fixed_exchanges: tuple[str, ...] | list[str] = ()
    _sync_client = None

    @cached_property
    def _tables(self) -> dict:
        return {}

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client is None:
            # A reconnection gives the channel a new pool: the client follows it.
            if self._sync_client is None or self._sync_client.connection_pool is not self.pool:
                self._sync_client = self._create_client()
            client = self._sync_client
        yield client

    def get_table(self, exchange):
        if exchange not in self.fixed_exchanges:
            return super().get_table(exchange)
        table = self._tables.get(exchange)
        if table is None:
            table = super().get_table(exchange)
            if table:  # not before the exchange is bound
                self._tables[exchange] = table
        return table

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        self._tables.pop(exchange, None)
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(kombu_redis.Transport):
    Channel = Channel
