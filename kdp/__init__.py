"""kdp: the product's front door. The ``kdp`` command line and the local runtime (a
supervisor that runs pods as processes and plays the part Kubernetes plays in a cluster).
May import every other package.
"""

__all__: list[str] = []
