"""The NAS-Bench-201 search space: 4-node cells with 6 edges and 5 candidate ops, 15,625 architectures."""
