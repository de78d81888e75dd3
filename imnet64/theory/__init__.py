"""Theory code that serves docs/ and bench/, never the runtime.

Hand-derived gradients, activation memory.
"""
