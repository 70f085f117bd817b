"""CAN bus data for the CQMLP intrusion detector.

- :mod:`hwkit.data.can`: frames, the Car-Hacking (HCRL) readers (ragged CSV and
  ``normal_run_data.txt``), standard CAN logs through python-can, the CSV writer.
- :mod:`hwkit.data.synth`: a seeded Car-Hacking-style generator with a 500 kbit/s bus model.
- :mod:`hwkit.data.windows`: n-frame windows -> 10n uint8 features, labelling and splits.

Heavy imports (numpy is fine; python-can, torch) stay inside the functions that need them.
"""
