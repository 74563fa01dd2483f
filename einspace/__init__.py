"""einspace: neural architecture search over a probabilistic grammar of tensor operations."""
