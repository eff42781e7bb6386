"""Sequence encoders: one file per model, each registering itself (`modules.registry.register`)."""
