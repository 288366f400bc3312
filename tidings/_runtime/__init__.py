"""The runtime that composes a handler (private; the facades are the public face).

- ``lifecycle``: the task tree, start and close, restart, the router (`Runtime`),
  and the life-cycle methods both handlers show (`Lifecycle`);
- ``channel``: one channel name's registrations (`ChannelState`) and its public
  face (`Channel`), a leaf;
- ``registry``: the registration transaction and the one removal cascade;
- ``status``: the status channel;
- ``events``: `Event`, and the iterators of ``Channels.subscribe()``;
- ``logs``: durable channels (positions, catch-up reads, gaps);
- ``work_queues``: consumer groups and their members.

Nothing here imports a facade (``tidings.channels``, ``tidings.pubsub``,
``tidings.store``, ``tidings.testing``...): the facades import the runtime, one way.
"""
