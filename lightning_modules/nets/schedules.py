"""Noise schedules as plain values, and the diffusers schedulers built from them.

A `NoiseSchedule` names the forward process (beta curve, T). The training module and both
samplers (DDPM ancestral, DDIM) are built from the same betas, so a model always samples with
exactly the schedule it was trained with. No Lightning here: usable from a notebook in two lines:

    schedule = NoiseSchedule("cosine")
    scheduler = build_scheduler("ddim", schedule, prediction_type="epsilon")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

# our name -> diffusers' `beta_schedule` name
BETA_SCHEDULES = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "cosine": "squaredcos_cap_v2",
    "sigmoid": "sigmoid",
}
SAMPLERS = ("ddpm", "ddim", "dpmsolver++")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class NoiseSchedule:
    """The forward-process variance schedule beta_1..beta_T.

    Args:
        name: "linear" (DDPM, beta_start..beta_end), "scaled_linear" (Stable Diffusion's
            linear-in-sqrt), "cosine" (Nichol & Dhariwal, diffusers "squaredcos_cap_v2"; ignores
            beta_start/beta_end) or "sigmoid" (GeoDiff-style sigmoid between beta_start and beta_end).
        num_train_timesteps: T.
        beta_start / beta_end: the first and last beta of the linear-type curves.
    """

    name: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if self.name not in BETA_SCHEDULES:
            raise ValueError(f"noise schedule name={self.name!r} is unknown; use one of {sorted(BETA_SCHEDULES)}")
        if int(self.num_train_timesteps) < 2:
            raise ValueError(f"num_train_timesteps={self.num_train_timesteps} must be >= 2")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start ({self.beta_start}) < beta_end ({self.beta_end}) < 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "NoiseSchedule":
        unknown = set(values) - {"name", "num_train_timesteps", "beta_start", "beta_end"}
        if unknown:
            raise ValueError(f"unknown noise-schedule keys {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def betas(self) -> torch.Tensor:
        """float32 tensor of T betas, computed by diffusers' own code for the named curve."""
        return DDPMScheduler(**self._diffusers_kwargs()).betas.clone()

    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas().double(), dim=0).float()

    def log_snr(self) -> torch.Tensor:
        """log(alpha_bar / (1 - alpha_bar)) per timestep: the curve that says where noise dominates."""
        ac = self.alphas_cumprod().double()
        return torch.log(ac / (1.0 - ac)).float()

    def _diffusers_kwargs(self) -> dict[str, Any]:
        return {
            "num_train_timesteps": int(self.num_train_timesteps),
            "beta_start": float(self.beta_start),
            "beta_end": float(self.beta_end),
            "beta_schedule": BETA_SCHEDULES[self.name],
        }

    def scheduler_kwargs(self, sampler: str) -> dict[str, Any]:
        """The schedule part of a diffusers scheduler config for `sampler`.

        DDIMScheduler and DPMSolverMultistepScheduler have no "sigmoid" curve, so they get the
        same betas as `trained_betas`.
        """
        kwargs = self._diffusers_kwargs()
        if sampler in ("ddim", "dpmsolver++") and self.name == "sigmoid":
            kwargs["trained_betas"] = self.betas().tolist()
        return kwargs


def build_scheduler(
    sampler: str,
    schedule: NoiseSchedule,
    *,
    prediction_type: str = "epsilon",
    clip_sample: bool = True,
    timestep_spacing: str = "trailing",
) -> DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler:
    """A diffusers scheduler for `sampler` ("ddpm" ancestral, "ddim" or "dpmsolver++") on `schedule`.

    `timestep_spacing="trailing"` makes DDIM's few steps start at t = T-1 (pure noise), which
    "leading" (the diffusers default) does not; DDPM with all T steps is the same either way.
    "dpmsolver++" is DPM-Solver++(2M) (Lu et al. 2022, diffusers' `DPMSolverMultistepScheduler`,
    solver_order 2, first order on the last steps): 15-20 steps reach what DDIM needs far more for.
    It has no `clip_sample`; its thresholding with `sample_max_value=1` is the same clip of the
    predicted x0 to [-1, 1] (the quantile scale is clamped to [1, 1]).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown; use one of {SAMPLERS}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} is unknown; use one of {PREDICTION_TYPES}")
    common = dict(schedule.scheduler_kwargs(sampler), prediction_type=prediction_type,
                  clip_sample=clip_sample, timestep_spacing=timestep_spacing)
    if sampler == "ddpm":
        scheduler = DDPMScheduler(**common, variance_type="fixed_small")
    elif sampler == "dpmsolver++":
        clip = common.pop("clip_sample")
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                                thresholding=clip, sample_max_value=1.0)
    else:
        scheduler = DDIMScheduler(**common, set_alpha_to_one=True)
    if not torch.allclose(scheduler.betas, schedule.betas()):
        raise RuntimeError(f"{sampler} scheduler betas differ from the {schedule.name} schedule")
    return scheduler


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at `timesteps`."""
    ac = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac)


def min_snr_weight(snr_t: torch.Tensor, gamma: float | None, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023) per sample; ones when gamma is None.

    Written as the weight on the loss of the predicted quantity: epsilon -> min(snr, g) / snr,
    v -> min(snr, g) / (snr + 1), x0 -> min(snr, g).
    """
    if gamma is None:
        return torch.ones_like(snr_t)
    clipped = torch.clamp(snr_t, max=float(gamma))
    if prediction_type == "epsilon":
        return clipped / snr_t.clamp(min=1e-8)
    if prediction_type == "v_prediction":
        return clipped / (snr_t + 1.0)
    return clipped


def describe(schedule: NoiseSchedule) -> str:
    """One line for logs: name, T, and where log-SNR crosses 0 (half signal, half noise)."""
    log_snr = schedule.log_snr()
    crossing = int(torch.argmin(log_snr.abs()))
    return (f"{schedule.name} T={schedule.num_train_timesteps} log-SNR {log_snr[0]:.2f}..{log_snr[-1]:.2f}, "
            f"SNR=1 at t={crossing} ({crossing / schedule.num_train_timesteps:.0%})")


__all__ = ["NoiseSchedule", "build_scheduler", "snr", "min_snr_weight", "describe", "BETA_SCHEDULES", "SAMPLERS"]
