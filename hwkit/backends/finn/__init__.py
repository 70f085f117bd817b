"""The FINN (finn-plus) dataflow backend: passes, graph execution, Vivado report parsing."""
