"""Workers and the analyst queue: guarded fetch, hashing, known lists, hosting, priority, review."""
