"""Capacity tracking for the gateway: which router session may take one more request.

The contract every backend implements is :class:`~gateway.capacity.base.CapacityTracker`.
"""
