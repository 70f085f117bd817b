"""hwkit: hardware-aware deployment of neural networks.

`import hwkit` stays cheap: torch, finn-plus and onnxruntime are imported inside the passes that
need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
