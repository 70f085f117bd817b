"""Synapse-device conductance models, differential-pair weights and pulse-update rules (vectorised in torch).

The method is reconstructed in /work/shared/reference/synapse.md (S. Lim et al., arXiv:1707.06381, only
the abstract could be read; NeuroSim and aihwkit device models). The choices made here, which the
paper's full text may contradict ([VERIFY] in the reference), are:

* **Normalised conductance** g = (G - Gmin)/(Gmax - Gmin) in [0, 1]; a device is driven along its LTP
  curve (potentiation, g up) or its LTD curve (depression, g down, counted from Gmax).
* **Curve families** (``family``): ``linear``; ``exponential`` (NeuroSim, G(P) = B(1 - e^(-P/A)) + Gmin,
  parameter a = A/Pmax); ``power`` (G(P) = ((Gmax^alpha - Gmin^alpha) P/Pmax + Gmin^alpha)^(1/alpha),
  parameter alpha; it depends on the on/off ratio Gmax/Gmin). LTP and LTD each have their own level
  count (Pmax) and nonlinearity parameter, so LTP/LTD asymmetry is two different curves. A pulse is
  applied NeuroSim-style: invert the curve to a pulse coordinate, add n/Pmax, clip, evaluate.
* NeuroSim's nonlinearity *label* NL is converted with a = A/Pmax = 1.263/|NL|, a power-law fit to the
  three getParamA points quoted in the reference (NL 0.01 -> 126.3, 0.18 -> 7.01, 1 -> 1.25; the fit is
  within 1 % of each). Beyond NL = 1 it is an extrapolation [UNCONFIRMED against getParamA's table].
* **Weight** w = beta * (Ĝ+ - Ĝ-) with Ĝ the normalised read conductance including device-to-device
  offsets of Gmin/Gmax, so a finite on/off ratio matters through d2d and read noise.
* **Variations**: d2d spreads are relative Gaussian (xi ~ N(0, 1)) on Pmax, on the nonlinearity
  parameter, on Gmax and on Gmin, sampled once per device (aihwkit-style relative spread, not NeuroSim
  V3.0's absolute siemens offsets). Cycle-to-cycle write noise is NeuroSim's N(0, c2c^2 * |n|) per
  update event of n > 0 pulses (in units of Gmax - Gmin), then clip. Read noise: G(1 + read_noise * xi)
  on every read.
* **Updates**: the desired change is dW = -lr * dL/dW (descent). Pulse counts n = Q(|dW| / dw_nom) with
  dw_nom = beta/Pmax_ltp for one device (unidirectional) and 2 beta/Pmax_ltp for a pulse pair
  (bidirectional, the same n on both devices); Q = truncate | round | stochastic. ``adaptive`` switches
  to the device-aware rule (reference 2.3 (ii)): n from the inverse of the *nominal* curve at each
  device's present state, so a nonlinear device receives the pulses that would move it by dW/beta
  (unidirectional) or dW/(2 beta) per device (bidirectional).
* **Unidirectional refresh**: when either device of a pair reaches ``refresh_threshold`` (normalised
  g, default 0.9, [VERIFY] trigger), the pair's weight is read (with read noise), both devices are reset
  to Gmin and |w|/beta is re-written onto one device with LTP pulses counted on the nominal curve
  (rounded; with write noise): open loop by default, or closed loop with ``refresh_program =
  "write-verify"`` (below; ``refresh_verify.depress = False`` keeps it potentiation-only).
* **Write-verify** (:class:`WriteVerify`, ``program(..., mode="write-verify")``): after the open-loop
  write, read the pair (with read noise) and re-pulse the pairs whose weight is off by more than
  ``tolerance * beta``, up to ``max_iterations`` rounds. The controller only sees read values and the
  *nominal* curve: a weight that is too small is raised by LTP pulses on G+ (or LTD pulses on G- when G-
  holds more than its planned conductance), one that is too large the mirror; the pulse count is the
  nominal inverse curve's count for the error from the read state (rounded; a pair within half a nominal
  step gets none).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hwkit.errors import BoardError

FAMILIES = ("linear", "exponential", "power")
RULES = ("software", "bidirectional", "unidirectional")
QUANTISERS = ("truncate", "round", "stochastic")
NL_LABEL_COEFF = 1.263
"""a = A/Pmax = NL_LABEL_COEFF / |NL| (fit to NeuroSim getParamA points, see the module docstring)."""


def a_from_nl_label(nl: float) -> float:
    """A/Pmax of the exponential model for a NeuroSim nonlinearity label (the sign only picks LTP/LTD)."""
    if nl == 0:
        return math.inf
    return NL_LABEL_COEFF / abs(nl)


@dataclass(frozen=True)
class DeviceModel:
    """A synapse device: its conductance-vs-pulse curves, range and variations."""

    name: str
    """Preset name (file name in boards/devices/) or 'custom'."""
    family: str = "linear"
    """linear | exponential | power."""
    levels_ltp: int = 64
    """Pmax of potentiation: pulses from Gmin to Gmax."""
    levels_ltd: int = 64
    """Pmax of depression: pulses from Gmax to Gmin."""
    nl_ltp: float = math.inf
    """exponential: A/Pmax of LTP (inf = linear); power: alpha of LTP (1 = linear)."""
    nl_ltd: float = math.inf
    """exponential: A/Pmax of LTD; power: alpha of LTD (the LTD curve mirrors the LTP shape from Gmax)."""
    gmax_s: float = 1e-5
    """Maximum conductance, in siemens."""
    gmin_s: float = 1e-6
    """Minimum conductance, in siemens."""
    c2c: float = 0.0
    """Cycle-to-cycle write noise: sigma per sqrt(pulse), as a fraction of Gmax - Gmin."""
    read_noise: float = 0.0
    """Relative sigma of the conductance on every read."""
    d2d_levels: float = 0.0
    """Device-to-device relative sigma of Pmax (LTP and LTD)."""
    d2d_nl: float = 0.0
    """Device-to-device relative sigma of the nonlinearity parameter (a or alpha)."""
    d2d_gmax: float = 0.0
    """Device-to-device relative sigma of Gmax."""
    d2d_gmin: float = 0.0
    """Device-to-device relative sigma of Gmin."""

    def __post_init__(self) -> None:
        where = f"device '{self.name}'"
        if self.family not in FAMILIES:
            raise BoardError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        for f in ("levels_ltp", "levels_ltd"):
            if int(getattr(self, f)) < 1:
                raise BoardError(f"{where}: {f} must be >= 1")
        if not 0 < self.gmin_s < self.gmax_s:
            raise BoardError(f"{where}: need 0 < gmin_s < gmax_s, got {self.gmin_s} and {self.gmax_s}")
        for f in ("nl_ltp", "nl_ltd"):
            v = getattr(self, f)
            if self.family == "exponential" and not v > 0:
                raise BoardError(f"{where}: {f} (A/Pmax) must be > 0")
            if self.family == "power" and abs(v) < 1e-3:
                raise BoardError(f"{where}: {f} (alpha) must not be 0")
        for f in ("c2c", "read_noise", "d2d_levels", "d2d_nl", "d2d_gmax", "d2d_gmin"):
            if getattr(self, f) < 0:
                raise BoardError(f"{where}: {f} must be >= 0")

    @property
    def on_off_ratio(self) -> float:
        """Dynamic range Gmax/Gmin."""
        return self.gmax_s / self.gmin_s

    @property
    def gmin_norm(self) -> float:
        """Gmin in units of Gmax - Gmin (the offset that read noise and Gmin d2d act on)."""
        return self.gmin_s / (self.gmax_s - self.gmin_s)

    def with_(self, **changes: Any) -> DeviceModel:
        """A copy with fields changed (for sweeps)."""
        return replace(self, **changes)


# ------------------------------------------------------------------------------------ presets (data)


def devices_dir() -> Path:
    """Where the shipped device presets live (boards/devices/, installed as hwkit/boards/devices/)."""
    return Path(str(resources.files("hwkit.boards"))) / "devices"


def device_names() -> list[str]:
    """Shipped device presets."""
    return sorted(p.stem for p in devices_dir().glob("*.toml"))


_NUMERIC = ("levels_ltp", "levels_ltd", "nl_ltp", "nl_ltd", "gmax_s", "gmin_s", "c2c", "read_noise",
            "d2d_levels", "d2d_nl", "d2d_gmax", "d2d_gmin")


def device_from_table(data: dict[str, Any], name: str, where: str) -> DeviceModel:
    """Build a device from a TOML table. ``nl_label_ltp/ltd`` (NeuroSim labels) may replace ``nl_ltp/ltd``."""
    known = {f.name for f in fields(DeviceModel)} | {"nl_label_ltp", "nl_label_ltd", "description", "sources"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BoardError(f"{where}: unknown device field(s) {', '.join(unknown)}")
    kw: dict[str, Any] = {"name": name}
    for key in _NUMERIC:
        if key in data:
            v = data[key]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise BoardError(f"{where}: field '{key}' must be a number, got {v!r}")
            kw[key] = int(v) if key.startswith("levels") else float(v)
    for side in ("ltp", "ltd"):
        label = data.get(f"nl_label_{side}")
        if label is not None:
            if f"nl_{side}" in data:
                raise BoardError(f"{where}: give nl_{side} or nl_label_{side}, not both")
            kw[f"nl_{side}"] = a_from_nl_label(float(label))
    if "family" in data:
        kw["family"] = data["family"]
    if kw.get("family", "linear") == "power":
        kw.setdefault("nl_ltp", 1.0)
        kw.setdefault("nl_ltd", 1.0)
    try:
        return DeviceModel(**kw)
    except BoardError as exc:
        raise BoardError(f"{where}: {exc}") from None


def load_device_file(path: Path) -> tuple[DeviceModel, dict[str, Any]]:
    """A device preset file and its raw table (with ``sources``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BoardError(f"{path}: cannot read device file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"{path}: malformed TOML ({exc})") from None
    return device_from_table(data, path.stem, str(path)), data


def load_device(ref: str) -> DeviceModel:
    """A shipped preset by name, or a device TOML file by path."""
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        if not path.is_file():
            raise BoardError(f"{ref}: device file not found")
    else:
        path = devices_dir() / f"{ref}.toml"
        if not path.is_file():
            raise BoardError(f"unknown device preset '{ref}'; known: {', '.join(device_names())}")
    return load_device_file(path)[0]


# ---------------------------------------------------------------------------------------- curves


def _shape(family: str, u: Any, p: Any, r: float) -> Any:
    """Normalised curve g = f(u), u = P/Pmax in [0, 1]; p = a (exponential) or alpha (power)."""
    import torch

    if family == "linear":
        return u
    if family == "exponential":
        return torch.expm1(-u / p) / torch.expm1(-1.0 / p)
    lo = r ** (-p)
    h = ((1.0 - lo) * u + lo) ** (1.0 / p)
    return (h - 1.0 / r) / (1.0 - 1.0 / r)


def _inverse(family: str, g: Any, p: Any, r: float) -> Any:
    """u = f^-1(g)."""
    import torch

    if family == "linear":
        return g
    if family == "exponential":
        return -p * torch.log1p(g * torch.expm1(-1.0 / p))
    lo = r ** (-p)
    h = g * (1.0 - 1.0 / r) + 1.0 / r
    return (h ** p - lo) / (1.0 - lo)


def _param(x: Any, like: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(like.dtype)
    return torch.full_like(like, float(x))


def ltp_curve(dev: DeviceModel, pulses: Any) -> Any:
    """Normalised conductance after ``pulses`` LTP pulses from Gmin (nominal device)."""
    import torch

    p = torch.as_tensor(pulses, dtype=torch.float64)
    u = (p / dev.levels_ltp).clamp(0, 1)
    return _shape(dev.family, u, _param(dev.nl_ltp, u), dev.on_off_ratio)


def ltd_curve(dev: DeviceModel, pulses: Any) -> Any:
    """Normalised conductance after ``pulses`` LTD pulses from Gmax (nominal device)."""
    import torch

    p = torch.as_tensor(pulses, dtype=torch.float64)
    u = (p / dev.levels_ltd).clamp(0, 1)
    return 1.0 - _shape(dev.family, u, _param(dev.nl_ltd, u), dev.on_off_ratio)


def apply_pulses(dev: DeviceModel, g: Any, n: Any, ltp: bool, pmax: Any = None, nl: Any = None,
                 generator: Any = None) -> Any:
    """g after n pulses (>= 0, elementwise) along the LTP (``ltp``) or LTD curve, with c2c noise, clipped.

    ``pmax`` and ``nl`` are per-device tensors (device-to-device variation) or None for nominal values.
    """
    import torch

    r = dev.on_off_ratio
    pmax = _param(pmax if pmax is not None else (dev.levels_ltp if ltp else dev.levels_ltd), g)
    nl = _param(nl if nl is not None else (dev.nl_ltp if ltp else dev.nl_ltd), g)
    n = n.to(g.dtype)
    if ltp:
        u = _inverse(dev.family, g.clamp(0, 1), nl, r)
        out = _shape(dev.family, (u + n / pmax).clamp(0, 1), nl, r)
    else:
        u = _inverse(dev.family, (1.0 - g).clamp(0, 1), nl, r)
        out = 1.0 - _shape(dev.family, (u + n / pmax).clamp(0, 1), nl, r)
    out = torch.where(n > 0, out, g)
    if dev.c2c > 0:
        noise = torch.randn(g.shape, generator=generator, dtype=g.dtype) * dev.c2c * n.abs().sqrt()
        out = out + noise
    return out.clamp(0.0, 1.0)


def nominal_pulses_to(dev: DeviceModel, g_from: Any, g_to: Any, ltp: bool) -> Any:
    """Real-valued pulse count that moves a *nominal* device from g_from to g_to (the inverse curve)."""
    r = dev.on_off_ratio
    if ltp:
        p = _param(dev.nl_ltp, g_from)
        du = _inverse(dev.family, g_to.clamp(0, 1), p, r) - _inverse(dev.family, g_from.clamp(0, 1), p, r)
        return (du * dev.levels_ltp).clamp(min=0)
    p = _param(dev.nl_ltd, g_from)
    du = (_inverse(dev.family, (1 - g_to).clamp(0, 1), p, r)
          - _inverse(dev.family, (1 - g_from).clamp(0, 1), p, r))
    return (du * dev.levels_ltd).clamp(min=0)


def quantise_pulses(x: Any, mode: str, generator: Any = None, n_max: int | None = None) -> Any:
    """Integer pulse counts from real ones (>= 0): truncate (floor), round (half up) or stochastic rounding."""
    import torch

    if mode == "truncate":
        n = torch.floor(x)
    elif mode == "round":
        n = torch.floor(x + 0.5)
    elif mode == "stochastic":
        n = torch.floor(x + torch.rand(x.shape, generator=generator, dtype=x.dtype))
    else:
        raise ValueError(f"pulse quantiser must be one of {', '.join(QUANTISERS)}, got {mode!r}")
    return n.clamp(0, n_max) if n_max is not None else n


# ------------------------------------------------------------------------------- differential pair


@dataclass(frozen=True)
class WriteVerify:
    """Closed-loop programming: program, read back (with read noise), re-pulse until within tolerance."""

    tolerance: float = 0.02
    """Accept a pair when |w_read - w_target| <= tolerance * beta (tolerance is a fraction of the device range)."""
    max_iterations: int = 20
    """Verify rounds after the open-loop write (each: one read of the pairs still off, then pulses)."""
    depress: bool = True
    """Correct an over-programmed device with LTD pulses; False: only LTP (potentiate the partner device)."""

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise ValueError(f"write-verify tolerance must be > 0, got {self.tolerance!r}")
        if int(self.max_iterations) != self.max_iterations or self.max_iterations < 0:
            raise ValueError(f"write-verify max_iterations must be an integer >= 0, got {self.max_iterations!r}")


PROGRAM_MODES = ("open-loop", "write-verify", "exact")


@dataclass(frozen=True)
class UpdateRule:
    """How a desired weight change becomes pulses."""

    rule: str = "unidirectional"
    """software | bidirectional | unidirectional."""
    quantise: str = "stochastic"
    """truncate | round | stochastic (pulse-count quantisation)."""
    adaptive: bool = False
    """Device-aware pulse counts from the inverse nominal curve (else proportional to |dW|)."""
    n_max: int | None = None
    """Most pulses per device per update (None: no limit)."""
    refresh_threshold: float = 0.9
    """Unidirectional: refresh a pair when either device's normalised g reaches this ..."""
    refresh_lower: float = 0.0
    """... and the other device's g is at least this (aihwkit OneSidedUnitCell's lower threshold; 0: any pair)."""
    refresh_program: str = "open-loop"
    """How a refresh re-writes the weight: open-loop | write-verify (closed loop with ``refresh_verify``)."""
    refresh_verify: WriteVerify = field(default_factory=lambda: WriteVerify(tolerance=0.02, max_iterations=10))
    """Write-verify settings of a closed-loop refresh (LTD pulses may correct an overshoot, like the reset does;
    ``depress=False`` keeps the re-write potentiation-only)."""

    def __post_init__(self) -> None:
        if self.refresh_program not in ("open-loop", "write-verify"):
            raise ValueError(f"refresh_program must be open-loop or write-verify, got {self.refresh_program!r}")
        if self.rule not in RULES:
            raise ValueError(f"update rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.quantise not in QUANTISERS:
            raise ValueError(f"pulse quantiser must be one of {', '.join(QUANTISERS)}, got {self.quantise!r}")


class DifferentialArray:
    """Conductance pairs (G+, G-) for one weight matrix, with per-device d2d parameters.

    ``g`` has shape (2, *shape): index 0 the G+ devices, 1 the G- devices, normalised to [0, 1].
    A mutable simulation state (not a config), updated in place by :meth:`update` and :meth:`program`.
    """

    def __init__(self, dev: DeviceModel, shape: tuple[int, ...], beta: float, generator: Any = None) -> None:
        import torch

        self.dev, self.beta, self.gen = dev, float(beta), generator
        full = (2, *shape)
        self.g = torch.zeros(full, dtype=torch.float64)

        def spread(sigma: float, floor: float = 0.05) -> Any:
            xi = torch.randn(full, generator=generator, dtype=torch.float64)
            return (1.0 + sigma * xi).clamp(min=floor)

        self.nl_ltp: Any = None
        self.nl_ltd: Any = None
        self.pmax_ltp = (dev.levels_ltp * spread(dev.d2d_levels)).clamp(min=1.0)
        self.pmax_ltd = (dev.levels_ltd * spread(dev.d2d_levels)).clamp(min=1.0)
        if dev.family == "power":  # alpha spreads additively around its value (it may be near 1 or < 0)
            self.nl_ltp = dev.nl_ltp + dev.d2d_nl * abs(dev.nl_ltp) * torch.randn(full, generator=generator,
                                                                                  dtype=torch.float64)
            self.nl_ltd = dev.nl_ltd + dev.d2d_nl * abs(dev.nl_ltd) * torch.randn(full, generator=generator,
                                                                                  dtype=torch.float64)
            self.nl_ltp = torch.where(self.nl_ltp.abs() < 1e-3, torch.full_like(self.nl_ltp, 1e-3), self.nl_ltp)
            self.nl_ltd = torch.where(self.nl_ltd.abs() < 1e-3, torch.full_like(self.nl_ltd, 1e-3), self.nl_ltd)
        elif dev.family == "exponential":
            self.nl_ltp = dev.nl_ltp * spread(dev.d2d_nl)
            self.nl_ltd = dev.nl_ltd * spread(dev.d2d_nl)
        # Per-device Gmin/Gmax; Gmin is clamped below 0.99 Gmax so that Gmin < Gmax always holds.
        gmax = dev.gmax_s * spread(dev.d2d_gmax)
        gmin = torch.minimum(dev.gmin_s * spread(dev.d2d_gmin), 0.99 * gmax)
        span = dev.gmax_s - dev.gmin_s
        self.offset = (gmin - dev.gmin_s) / span
        self.scale = (gmax - gmin) / span
        self.refreshes = 0
        self.pulses = 0

    # -- reading -------------------------------------------------------------------------------
    def conductance(self, read_noise: bool = False) -> Any:
        """Normalised read conductance Ĝ = (G - Gmin_nominal)/(Gmax - Gmin), shape (2, *shape)."""
        import torch

        gh = self.offset + self.scale * self.g
        if read_noise and self.dev.read_noise > 0:
            gh = gh + self.dev.read_noise * (self.dev.gmin_norm + gh) * torch.randn(
                gh.shape, generator=self.gen, dtype=gh.dtype)
        return gh

    def siemens(self) -> Any:
        """Absolute conductances in siemens, shape (2, *shape)."""
        return self.dev.gmin_s + self.conductance() * (self.dev.gmax_s - self.dev.gmin_s)

    def weights(self, read_noise: bool = False) -> Any:
        """w = beta * (Ĝ+ - Ĝ-)."""
        gh = self.conductance(read_noise)
        return self.beta * (gh[0] - gh[1])

    # -- writing -------------------------------------------------------------------------------
    def _pulse(self, idx: int, n: Any, ltp: bool) -> None:
        pmax = self.pmax_ltp[idx] if ltp else self.pmax_ltd[idx]
        nl = None if self.nl_ltp is None else (self.nl_ltp[idx] if ltp else self.nl_ltd[idx])
        self.g[idx] = apply_pulses(self.dev, self.g[idx], n, ltp, pmax, nl, self.gen)
        self.pulses += int(n.sum().item())

    def program(self, w: Any, mode: str = "open-loop", mask: Any = None, centred: bool = False,
                verify: WriteVerify | None = None) -> dict[str, int]:
        """Reset to Gmin and write ``w``: w > 0 onto G+, w < 0 onto G-, clipped to [-beta, beta].

        ``centred``: write g+ = (1 + w/beta)/2 and g- = (1 - w/beta)/2 instead, both devices around mid
        range (the starting point of bidirectional training, so that both devices can move both ways).

        ``open-loop``: LTP pulses counted (rounded) on the nominal curve, applied to the real device
        (d2d and write noise show up as error). ``write-verify``: the same, then closed-loop correction
        with ``verify`` (default :class:`WriteVerify`). ``exact``: set g = |w|/beta directly (no noise;
        for verification of the mapping).

        Returns counts for the programmed pairs: ``pulses`` (all write pulses), ``open_loop_pulses``,
        ``verify_pulses``, ``reads`` (pair reads by the verify loop), ``rounds`` (verify rounds run) and
        ``unconverged`` (pairs still outside the tolerance after the last round; 0 for open loop).
        """
        import torch

        if mode not in PROGRAM_MODES:
            raise ValueError(f"programming mode must be one of {', '.join(PROGRAM_MODES)}, got {mode!r}")
        w = w.to(torch.float64)
        if mask is None:
            mask = torch.ones(w.shape, dtype=torch.bool)
        start = self.pulses
        if centred:
            half = (w / self.beta).clamp(-1, 1) / 2
            plan = (torch.where(mask, 0.5 + half, self.g[0]), torch.where(mask, 0.5 - half, self.g[1]))
        else:
            target = (w.abs() / self.beta).clamp(0, 1)
            zero = torch.zeros_like(target)
            plan = (torch.where(w > 0, target, zero), torch.where(w > 0, zero, target))
        for idx in (0, 1):
            t = torch.where(mask, plan[idx], torch.zeros_like(plan[idx]))
            if mode == "exact":
                self.g[idx] = torch.where(mask, t, self.g[idx])
                continue
            self.g[idx] = torch.where(mask, torch.zeros_like(self.g[idx]), self.g[idx])
            n = quantise_pulses(nominal_pulses_to(self.dev, torch.zeros_like(t), t, True), "round")
            self._pulse(idx, torch.where(mask, n, torch.zeros_like(n)), True)
        stats = {"pulses": self.pulses - start, "open_loop_pulses": self.pulses - start, "verify_pulses": 0,
                 "reads": 0, "rounds": 0, "unconverged": 0}
        if mode == "write-verify":
            v = self._verify((w / self.beta).clamp(-1, 1), plan, mask, verify or WriteVerify())
            stats.update(v, pulses=self.pulses - start)
        return stats

    def _verify(self, w_norm: Any, plan: tuple[Any, Any], mask: Any, wv: WriteVerify) -> dict[str, int]:
        """Closed-loop correction of the masked pairs towards w_norm (= w / beta); see :class:`WriteVerify`."""
        import torch

        dev, tol = self.dev, wv.tolerance
        active = mask.clone()
        reads = rounds = 0
        start = self.pulses
        zero = torch.zeros_like(w_norm)
        for it in range(wv.max_iterations + 1):
            gh = self.conductance(read_noise=True)   # what the controller sees (d2d offsets, read noise)
            reads += int(active.sum())
            err = (gh[0] - gh[1]) - w_norm
            active = active & (err.abs() > tol)
            if it == wv.max_iterations or not bool(active.any()):
                break
            rounds += 1
            mag = err.abs()
            raise_w, lower_w = active & (err < 0), active & (err > 0)
            gp, gm = gh[0].clamp(0, 1), gh[1].clamp(0, 1)

            def count(g: Any, ltp: bool, m: Any = mag) -> Any:
                return quantise_pulses(nominal_pulses_to(dev, g, g + m if ltp else g - m, ltp), "round")

            n_pot_p, n_dep_p, n_pot_m, n_dep_m = count(gp, True), count(gp, False), count(gm, True), count(gm, False)
            if wv.depress:   # take the excess off the device that holds more than planned, if a pulse fits
                dep_m = raise_w & (gm > plan[1] + tol / 2) & (n_dep_m >= 1)
                dep_p = lower_w & (gp > plan[0] + tol / 2) & (n_dep_p >= 1)
            else:
                dep_m = dep_p = torch.zeros_like(active)
            # else potentiate the other device; a pair within half a nominal step gets no pulse (resolution)
            pot_p, pot_m = raise_w & ~dep_m & (n_pot_p >= 1), lower_w & ~dep_p & (n_pot_m >= 1)
            if not bool((pot_p | pot_m | dep_p | dep_m).any()):
                break
            self._pulse(0, torch.where(pot_p, n_pot_p, zero), True)
            self._pulse(0, torch.where(dep_p, n_dep_p, zero), False)
            self._pulse(1, torch.where(pot_m, n_pot_m, zero), True)
            self._pulse(1, torch.where(dep_m, n_dep_m, zero), False)
        return {"verify_pulses": self.pulses - start, "reads": reads, "rounds": rounds,
                "unconverged": int(active.sum())}

    def update(self, dw: Any, rule: UpdateRule) -> None:
        """Apply the desired change ``dw`` (= -lr * gradient) with ``rule`` (not 'software')."""
        import torch

        dw = dw.to(torch.float64)
        mag, up = dw.abs(), dw > 0
        zero = torch.zeros_like(mag)
        dev = self.dev
        if rule.rule == "bidirectional":
            if rule.adaptive:
                d = mag / (2 * self.beta)
                # the device that potentiates: G+ when up, G- when down; the other one depresses
                gp, gm = self.g[0], self.g[1]
                n_pot_p = nominal_pulses_to(dev, gp, gp + d, True)
                n_dep_p = nominal_pulses_to(dev, gp, gp - d, False)
                n_pot_m = nominal_pulses_to(dev, gm, gm + d, True)
                n_dep_m = nominal_pulses_to(dev, gm, gm - d, False)
                n_p_ltp, n_p_ltd = torch.where(up, n_pot_p, zero), torch.where(up, zero, n_dep_p)
                n_m_ltp, n_m_ltd = torch.where(up, zero, n_pot_m), torch.where(up, n_dep_m, zero)
            else:
                n = mag * dev.levels_ltp / (2 * self.beta)
                n_p_ltp, n_p_ltd = torch.where(up, n, zero), torch.where(up, zero, n)
                n_m_ltp, n_m_ltd = n_p_ltd, n_p_ltp
            q = lambda x: quantise_pulses(x, rule.quantise, self.gen, rule.n_max)  # noqa: E731
            n_p_ltp, n_p_ltd, n_m_ltp, n_m_ltd = q(n_p_ltp), q(n_p_ltd), q(n_m_ltp), q(n_m_ltd)
            self._pulse(0, n_p_ltp, True)
            self._pulse(0, n_p_ltd, False)
            self._pulse(1, n_m_ltp, True)
            self._pulse(1, n_m_ltd, False)
            return
        if rule.rule != "unidirectional":
            raise ValueError(f"DifferentialArray.update does not run rule {rule.rule!r}")
        if rule.adaptive:
            d = mag / self.beta
            n_p = nominal_pulses_to(dev, self.g[0], self.g[0] + d, True)
            n_m = nominal_pulses_to(dev, self.g[1], self.g[1] + d, True)
        else:
            n_p = n_m = mag * dev.levels_ltp / self.beta
        n_p = quantise_pulses(torch.where(up, n_p, zero), rule.quantise, self.gen, rule.n_max)
        n_m = quantise_pulses(torch.where(up, zero, n_m), rule.quantise, self.gen, rule.n_max)
        self._pulse(0, n_p, True)  # only potentiation, ever
        self._pulse(1, n_m, True)
        self.refresh(rule.refresh_threshold, rule.refresh_program, rule.refresh_verify, rule.refresh_lower)

    def refresh(self, threshold: float, program: str = "open-loop", verify: WriteVerify | None = None,
                lower: float = 0.0) -> int:
        """Unidirectional refresh: pairs with a device at or above ``threshold`` are read, reset, re-written.

        Only pairs whose other device is at or above ``lower`` (0: all): a pair with one device high and the
        other near Gmin holds a large weight that a re-write cannot lower (aihwkit's OneSidedUnitCell rule).
        ``program``: open-loop (rounded nominal pulse count) or write-verify (closed loop with ``verify``).
        """
        sat = (self.g.max(dim=0).values >= threshold) & (self.g.min(dim=0).values >= lower)
        count = int(sat.sum().item())
        if count:
            w = self.weights(read_noise=True)
            self.program(w, program, mask=sat, verify=verify)
            self.refreshes += count
        return count
