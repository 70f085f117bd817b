"""Energy meters (hardware counters) and the documented estimate used where there are none."""
