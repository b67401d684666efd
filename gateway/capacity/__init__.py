"""Capacity tracking for the gateway: which router session may take one more request.

The contract every backend implements is :class:`~gateway.capacity.base.CapacityTracker`;
:func:`~gateway.capacity.factory.make_tracker` builds one. Modules, downstream first:
``decide`` (pure choices), ``line`` (local waiters), ``admission`` (wait window and queue over
any backend), ``memory`` (in-process), ``lua`` + ``resp`` + ``redis_core`` + ``redis_link``
(shared in Redis; ``resp`` is the pipelined connection the scripts go over), ``breaker`` and
``redis_tracker`` (outages), ``factory``.
"""
