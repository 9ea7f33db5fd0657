"""Inspection settings, read from the environment (prefix ``WEIGHTSERVE_INSPECTION_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InspectionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEIGHTSERVE_INSPECTION_", frozen=True, extra="ignore")

    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    """Cap on the promoted intermediate values one request may hold; over it answers 400."""

    sessions: int = Field(default=4, ge=1)
    """Inspection sessions kept at once (least recently used goes first)."""

    threads: int = Field(default=1, ge=0)
    """onnxruntime intra-op threads of an inspection session (0 = onnxruntime's choice); kept low so
    inspection does not starve serving."""

    max_occlusion_windows: int = Field(default=16384, ge=1)
    """Occluded copies one explain request may run (windows per image times images); more answers 400."""

    concurrency: int = Field(default=2, ge=1)
    """Inspection requests computing at once; more wait their turn, so serving keeps its CPUs."""

    png_size: int = Field(default=256, ge=16, le=4096)
    """Approximate side in pixels of each heat map tile in PNG answers."""
