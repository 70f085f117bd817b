"""AMP: adaptive MLP pruning (entropy-based Taylor importance, per-block binary search)."""
