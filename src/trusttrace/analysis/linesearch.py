"""The Moré–Thuente line search, one scalar problem at a time, in reverse-communication form.

Moré & Thuente, "Line search algorithms with guaranteed sufficient decrease", ACM TOMS 20 (1994), as
MINPACK-2's ``dcsrch``/``dcstep`` lay it out: it finds a step ``stp > 0`` along a descent direction with

    φ(stp) ≤ φ(0) + ftol · stp · φ'(0)          (sufficient decrease)
    |φ'(stp)| ≤ gtol · |φ'(0)|                   (curvature; together the strong Wolfe conditions)

where ``φ(stp) = f(x + stp · d)``. The caller owns the function: ``start`` takes φ(0), φ'(0) and the first
trial step and returns the step to evaluate; ``step`` takes φ and φ' there and returns the next step to
evaluate or ends the search. This is the search L-BFGS-B uses (and scikit-learn's ``lbfgs`` solver through
it), so probes fitted with it follow the same path as those; its defaults are L-BFGS-B's.

>>> search = MoreThuente()
>>> stp = search.start(phi0=1.0, dphi0=-2.0, stp=1.0)   # φ(t) = (1 - t)², evaluate at t = 1
>>> search.step(stp, phi=0.0, dphi=0.0)                   # φ(1) = 0, φ'(1) = 0: converged
1.0
>>> search.status
'converged'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Status = Literal["searching", "converged", "warning", "error"]

_XTRAPL, _XTRAPU = 1.1, 4.0  # bounds on extrapolation, as multiples of the last step
_P5, _P66 = 0.5, 0.66  # bisection when the bracket has not shrunk to 66 % of its width two steps ago


@dataclass
class _Bracket:
    """The two end points the search keeps: ``x`` has the lowest φ so far, ``y`` the other end."""

    stx: float
    fx: float
    gx: float
    sty: float
    fy: float
    gy: float
    brackt: bool = False  # a minimiser is known to lie between stx and sty


class MoreThuente:
    """One strong-Wolfe line search; call ``start`` once, then ``step`` while ``status == 'searching'``.

    Args:
        ftol: sufficient-decrease constant (L-BFGS-B: 1e-3).
        gtol: curvature constant (L-BFGS-B: 0.9).
        xtol: relative width of the bracket at which the search gives up (L-BFGS-B: 0.1).
        stpmin, stpmax: bounds on the step.

    After the search, ``status`` is ``converged`` (both conditions hold at the returned step), ``warning``
    (the search stopped on rounding, ``xtol`` or a bound; ``message`` says which) or ``error`` (bad input).
    """

    def __init__(self, ftol: float = 1e-3, gtol: float = 0.9, xtol: float = 0.1,
                 stpmin: float = 0.0, stpmax: float = 1e10) -> None:
        if not 0 <= ftol < gtol:
            raise ValueError(f"ftol={ftol}, gtol={gtol}: the Wolfe constants need 0 <= ftol < gtol "
                             "(L-BFGS-B uses ftol=1e-3, gtol=0.9).")
        if xtol < 0 or not 0 <= stpmin <= stpmax:
            raise ValueError(f"xtol={xtol}, stpmin={stpmin}, stpmax={stpmax}: need xtol >= 0 and "
                             "0 <= stpmin <= stpmax.")
        self.ftol, self.gtol, self.xtol, self.stpmin, self.stpmax = ftol, gtol, xtol, stpmin, stpmax
        self.status: Status = "error"
        self.message = "not started"

    def start(self, phi0: float, dphi0: float, stp: float) -> float:
        """Begin at φ(0) = ``phi0`` with slope ``dphi0`` (< 0); returns ``stp``, the first step to evaluate."""
        if dphi0 >= 0:
            return self._stop(stp, "error", f"the direction is not a descent direction (φ'(0) = {dphi0} >= 0)")
        if not self.stpmin <= stp <= self.stpmax:
            return self._stop(stp, "error", f"the first step {stp} lies outside [{self.stpmin}, {self.stpmax}]")
        self.finit, self.gtest = phi0, self.ftol * dphi0
        self.ginit = dphi0
        self.stage = 1  # 1 until a step meets sufficient decrease with φ' >= 0; then 2
        self.width = self.stpmax - self.stpmin
        self.width1 = self.width / _P5
        self.bracket = _Bracket(0.0, phi0, dphi0, 0.0, phi0, dphi0)
        self.stmin, self.stmax = 0.0, stp + _XTRAPU * stp
        self.status, self.message = "searching", ""
        return stp

    def step(self, stp: float, phi: float, dphi: float) -> float:
        """Take φ(``stp``) and φ'(``stp``); return the next step to evaluate, or the final one."""
        if self.status != "searching":
            raise RuntimeError(f"This search has ended ({self.status}: {self.message}); start a new one.")
        if not (math.isfinite(phi) and math.isfinite(dphi)):
            return self._stop(stp, "error", f"φ({stp}) = {phi}, φ' = {dphi}: the function is not finite there")
        b, ftest = self.bracket, self.finit + stp * self.gtest
        if self.stage == 1 and phi <= ftest and dphi >= 0:
            self.stage = 2
        ended = self._ended(stp, phi, dphi, ftest)
        if ended is not None:
            return self._stop(stp, *ended)
        if self.stage == 1 and b.fx >= phi > ftest:
            # stage 1 works on ψ(t) = φ(t) − φ(0) − ftol·t·φ'(0) while no step has shown φ' >= 0
            g = self.gtest
            shifted = _Bracket(b.stx, b.fx - b.stx * g, b.gx - g, b.sty, b.fy - b.sty * g, b.gy - g, b.brackt)
            stp = _cubic_step(shifted, stp, phi - stp * g, dphi - g, self.stmin, self.stmax)
            self.bracket = _Bracket(shifted.stx, shifted.fx + shifted.stx * g, shifted.gx + g,
                                    shifted.sty, shifted.fy + shifted.sty * g, shifted.gy + g, shifted.brackt)
        else:
            stp = _cubic_step(b, stp, phi, dphi, self.stmin, self.stmax)
        return self._next_trial(stp)

    def _ended(self, stp: float, phi: float, dphi: float, ftest: float) -> tuple[Status, str] | None:
        b, decrease = self.bracket, phi <= ftest
        if decrease and abs(dphi) <= self.gtol * -self.ginit:
            return "converged", "strong Wolfe conditions hold"
        if stp == self.stpmin and (not decrease or dphi >= self.gtest):
            return "warning", "the step reached stpmin"
        if stp == self.stpmax and decrease and dphi <= self.gtest:
            return "warning", "the step reached stpmax"
        if b.brackt and self.stmax - self.stmin <= self.xtol * self.stmax:
            return "warning", "the bracket is narrower than xtol"
        if b.brackt and (stp <= self.stmin or stp >= self.stmax):
            return "warning", "rounding errors prevent progress"
        return None

    def _next_trial(self, stp: float) -> float:
        b = self.bracket
        if b.brackt:
            if abs(b.sty - b.stx) >= _P66 * self.width1:
                stp = b.stx + _P5 * (b.sty - b.stx)  # the bracket shrinks too slowly: bisect
            self.width1, self.width = self.width, abs(b.sty - b.stx)
            self.stmin, self.stmax = min(b.stx, b.sty), max(b.stx, b.sty)
        else:
            self.stmin, self.stmax = stp + _XTRAPL * (stp - b.stx), stp + _XTRAPU * (stp - b.stx)
        stp = min(max(stp, self.stpmin), self.stpmax)
        if b.brackt and (stp <= self.stmin or stp >= self.stmax or self.stmax - self.stmin <= self.xtol * self.stmax):
            stp = b.stx  # no progress possible: fall back on the best step so far
        return stp

    def _stop(self, stp: float, status: Status, message: str) -> float:
        self.status, self.message = status, message
        return stp


def _cubic_step(b: _Bracket, stp: float, fp: float, dp: float, stpmin: float, stpmax: float) -> float:
    """MINPACK-2's ``dcstep``: a safeguarded step from the bracket and the new point; updates ``b``.

    Four cases, by how the new point (``stp``, ``fp``, ``dp``) compares with the best point ``x``: higher
    φ (a minimiser is bracketed); lower φ with a slope of the other sign (bracketed); lower φ and a slope
    of the same sign but smaller magnitude; lower φ and a slope no smaller. Each picks between the
    minimiser of the cubic through both points and that of a quadratic (secant), kept inside the bounds.
    """
    sgnd = dp * math.copysign(1.0, b.gx)
    if fp > b.fx:  # case 1
        theta = 3 * (b.fx - fp) / (stp - b.stx) + b.gx + dp
        gamma = _gamma(theta, b.gx, dp, flip=stp < b.stx)
        r = ((gamma - b.gx) + theta) / (((gamma - b.gx) + gamma) + dp)
        stpc = b.stx + r * (stp - b.stx)
        stpq = b.stx + ((b.gx / ((b.fx - fp) / (stp - b.stx) + b.gx)) / 2) * (stp - b.stx)
        stpf = stpc if abs(stpc - b.stx) < abs(stpq - b.stx) else stpc + (stpq - stpc) / 2
        b.brackt = True
    elif sgnd < 0:  # case 2
        theta = 3 * (b.fx - fp) / (stp - b.stx) + b.gx + dp
        gamma = _gamma(theta, b.gx, dp, flip=stp > b.stx)
        r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + b.gx)
        stpc = stp + r * (b.stx - stp)
        stpq = stp + (dp / (dp - b.gx)) * (b.stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        b.brackt = True
    elif abs(dp) < abs(b.gx):  # case 3
        theta = 3 * (b.fx - fp) / (stp - b.stx) + b.gx + dp
        gamma = _gamma(theta, b.gx, dp, flip=stp > b.stx, clamp=True)
        r = ((gamma - dp) + theta) / ((gamma + (b.gx - dp)) + gamma)
        if r < 0 and gamma != 0:
            stpc = stp + r * (b.stx - stp)
        else:
            stpc = stpmax if stp > b.stx else stpmin
        stpq = stp + (dp / (dp - b.gx)) * (b.stx - stp)
        if b.brackt:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            reach = stp + _P66 * (b.sty - stp)
            stpf = min(reach, stpf) if stp > b.stx else max(reach, stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = max(stpmin, min(stpmax, stpf))
    elif b.brackt:  # case 4, bracketed: the cubic through the new point and y
        theta = 3 * (fp - b.fy) / (b.sty - stp) + b.gy + dp
        gamma = _gamma(theta, b.gy, dp, flip=stp > b.sty)
        r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + b.gy)
        stpf = stp + r * (b.sty - stp)
    else:  # case 4, not bracketed: go to the bound
        stpf = stpmax if stp > b.stx else stpmin
    if fp > b.fx:
        b.sty, b.fy, b.gy = stp, fp, dp
    else:
        if sgnd < 0:
            b.sty, b.fy, b.gy = b.stx, b.fx, b.gx
        b.stx, b.fx, b.gx = stp, fp, dp
    return stpf


def _gamma(theta: float, da: float, db: float, *, flip: bool, clamp: bool = False) -> float:
    """The square root term of the cubic's minimiser, scaled against overflow; negated when ``flip``."""
    s = max(abs(theta), abs(da), abs(db))
    radicand = (theta / s) ** 2 - (da / s) * (db / s)
    gamma = s * math.sqrt(max(0.0, radicand) if clamp else radicand)
    return -gamma if flip else gamma
