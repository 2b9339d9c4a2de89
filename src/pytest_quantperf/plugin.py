"""pytest hooks (placeholder while the core is written)."""
