"""Binance API credentials: optional, and never needed for the public market data mm_sim reads.

Why a model at all: a user who keeps keys in the environment for other tools must not have them
echoed by mm_sim. If ``MM_BINANCE_API_KEY`` / ``MM_BINANCE_API_SECRET`` are set they are read
here, and only here, as ``SecretStr``: ``repr``/``str``/``model_dump_json`` show ``**********``,
and nothing in mm_sim unwraps them (the live path records only whether they are set). They are
read from the environment only, never from a file in the repository or a run directory.
"""

from __future__ import annotations

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mm_sim.errors import UserError

ENV_PREFIX = "MM_BINANCE_"


class BinanceCredentials(BaseSettings):
    """API key and secret for a Binance account (unused by market data; kept secret)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @property
    def configured(self) -> bool:
        return self.api_key is not None or self.api_secret is not None

    def describe(self) -> dict[str, str]:
        """What may be logged or written: whether each one is set, never a value."""
        return {
            "api_key": "set" if self.api_key is not None else "not set",
            "api_secret": "set" if self.api_secret is not None else "not set",
        }


def load_credentials() -> BinanceCredentials:
    """Read ``MM_BINANCE_*`` from the environment; errors name the variable, not its value."""
    try:
        return BinanceCredentials()
    except ValidationError as exc:
        where = ", ".join(
            ENV_PREFIX + ".".join(map(str, e["loc"])).upper() + f" ({e['msg']})"
            for e in exc.errors(include_input=False)
        )
        raise UserError(f"invalid Binance credentials in the environment: {where}") from None


__all__ = ["ENV_PREFIX", "BinanceCredentials", "load_credentials"]
