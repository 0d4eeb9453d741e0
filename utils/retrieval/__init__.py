"""Everything that ranks hash codes: code formats, Hamming distances, metrics, evaluation, index and search."""
