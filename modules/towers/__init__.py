"""Two-tower retrieval models (user tower x item tower), registered like every model."""
