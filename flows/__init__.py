"""Flow files shipped with hwkit (one TOML per flow)."""
