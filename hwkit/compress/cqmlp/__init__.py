"""CQMLP: the 2-bit quantised MLP CAN-bus intrusion detector (model, training recipe, CLI)."""
