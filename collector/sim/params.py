"""Request parameters and API errors shared by the simulator's routes and views."""

from __future__ import annotations

import re

Params = dict[str, str]


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def missing(name: str) -> ApiError:
    return ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def int_param(
    params: Params, name: str, default: int | None = None, *, low: int = 0, high: int | None = None
) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?\d+", raw):
        raise ApiError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise ApiError(400, -1100, f"Parameter '{name}' is out of range ({low}..{high}).")
    return value


def limit_param(params: Params, name: str, default: int, high: int) -> int:
    value = int_param(params, name, default, low=1, high=high)
    assert value is not None
    return value
