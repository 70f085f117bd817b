"""Errors a user can act on. The CLI prints them as one line and exits non-zero.

Everything that is the user's input going wrong (a file, a field, a layer) raises a subclass of
:class:`HwkitError` with a message that names the culprit. Anything else is a bug in hwkit or a
tool and is reported as an internal error naming the pass it happened in.
"""

from __future__ import annotations


class HwkitError(Exception):
    """Base class: a failure the user can fix; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(HwkitError):
    """Bad input: a missing or corrupt file, an unknown name, a malformed field."""

    exit_code = 2


class BoardError(InputError):
    """A board file is missing, malformed, or lacks a field the code needs."""


class FlowError(InputError):
    """A flow file is malformed, names an unknown pass, or cannot run on the board."""


class ModelLoadError(InputError):
    """The model file cannot be loaded safely or at all."""


class UnsupportedLayerError(HwkitError):
    """A layer of the model cannot be exported or mapped to the target."""

    exit_code = 3


class VerificationError(HwkitError):
    """Two stages of the flow disagree numerically on the golden batch."""

    exit_code = 4


class ToolError(HwkitError):
    """An external tool (finn-plus, Vivado, ...) failed inside a pass."""

    exit_code = 5
