"""Synapse-device conductance models and hardware-aware training for analog in-memory hardware."""
