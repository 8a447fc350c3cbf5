"""activator: buffers, throttles and balances requests for revisions at zero or short of capacity.

Built on the queue-proxy kernel (``queueproxy``: breaker, stats, proxy engine). Never
imported by ``queueproxy`` or ``autoscaler``.
"""

__all__: list[str] = []
