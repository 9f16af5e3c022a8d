"""What every settings model shares: strict, frozen, no NaN or infinity; and the markets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Market = Literal["spot", "option", "contract"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
