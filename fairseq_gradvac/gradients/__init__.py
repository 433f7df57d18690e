"""The per-direction gradients of a step and their exchange between workers."""
