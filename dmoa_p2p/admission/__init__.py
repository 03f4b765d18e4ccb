"""Admission control: the plugin kind and the built-in policies (none, threshold, degrade, cap)."""

from dmoa_p2p.admission._protocol import (
    AdmissionContext,
    AdmissionPolicy,
    Decision,
    OperatingPoint,
    PromptRefused,
    RefusalCause,
    candidate_configurations,
    whole_seconds,
)
from dmoa_p2p.admission.policies import (
    CapAdmission,
    DegradeAdmission,
    EvenShare,
    NoAdmission,
    ThresholdAdmission,
    projected_rho,
)

__all__ = [
    "AdmissionContext",
    "AdmissionPolicy",
    "CapAdmission",
    "Decision",
    "DegradeAdmission",
    "EvenShare",
    "NoAdmission",
    "OperatingPoint",
    "PromptRefused",
    "RefusalCause",
    "ThresholdAdmission",
    "candidate_configurations",
    "projected_rho",
    "whole_seconds",
]
