"""The DARTS search space: ops, genotypes, cells, evaluation networks, the search supernet."""
