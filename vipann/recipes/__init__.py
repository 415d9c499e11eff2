"""Recipes: complete, configurable runs built on the public API (transfer learning, pre-training, FixMatch / FMUC)."""
