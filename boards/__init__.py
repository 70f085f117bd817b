"""Board files shipped with hwkit (one TOML per target)."""
