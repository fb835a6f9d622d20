"""transferkit."""
