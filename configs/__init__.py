"""YAML defaults shipped with marl (read as package data: marl.configs)."""
