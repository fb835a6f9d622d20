"""Backbones (feature extractors with their preprocessing) and the heads placed on top of them."""
