"""Typed settings of the bots, from the environment (names as documented in the README)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str):
    return AliasChoices(*names)


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # The service the bots talk to
    api_url: str = Field("http://127.0.0.1:8080", validation_alias=_env("DEEPFAKE_API_URL"))
    api_token: str = Field("", validation_alias=_env("DEEPFAKE_API_TOKEN"))
    user_rate_limit: int = Field(5, validation_alias=_env("DEEPFAKE_BOT_USER_RATE_LIMIT"))
    user_rate_window_s: float = Field(600.0, validation_alias=_env("DEEPFAKE_BOT_USER_RATE_WINDOW_S"))
    # Zero retention: each check is submitted with "retain": false and deleted on the service
    # as soon as its reply is shown (the reply then has no "Full report" link).
    zero_retention: bool = Field(False, validation_alias=_env("DEEPFAKE_BOT_ZERO_RETENTION"))

    # Telegram
    telegram_bot_token: str = Field("", validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_base_url: str = Field("", validation_alias=_env("TELEGRAM_BASE_URL"))  # "" = the public Bot API
    # A local Bot API server (telegram-bot-api --local) hands out files of any size by path.
    telegram_local_mode: bool = Field(False, validation_alias=_env("TELEGRAM_LOCAL_MODE"))
    telegram_webhook_secret: str = Field("", validation_alias=_env("TELEGRAM_WEBHOOK_SECRET"))
    telegram_webhook_url: str = Field("", validation_alias=_env("TELEGRAM_WEBHOOK_URL"))  # "" = polling
    telegram_listen: str = Field("127.0.0.1", validation_alias=_env("TELEGRAM_LISTEN"))
    telegram_port: int = Field(8443, validation_alias=_env("TELEGRAM_PORT"))

    # Slack
    slack_bot_token: str = Field("", validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: str = Field("", validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_app_token: str = Field("", validation_alias=_env("SLACK_APP_TOKEN"))  # Socket Mode when set
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_env("SLACK_API_URL"))
    slack_listen: str = Field("127.0.0.1", validation_alias=_env("SLACK_LISTEN"))
    slack_port: int = Field(3000, validation_alias=_env("SLACK_PORT"))
    # A shared file larger than this is not downloaded (the service's own upload limit may be lower)
    slack_max_file_bytes: int = Field(200 * 1024 * 1024, validation_alias=_env("SLACK_MAX_FILE_BYTES"))
    # Where the Slack app remembers the requests it has answered (replays, retries)
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL", "DEEPFAKE_REDIS_URL"))


    @property
    def model_card_url(self) -> str:
        return self.api_url.rstrip("/") + "/v1/model-card"


def startup(platform: str) -> BotSettings:
    """Logging and settings for a bot's own process; exits with a sentence if a token is missing."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    s = BotSettings()
    if not getattr(s, f"{platform}_bot_token"):
        raise SystemExit(f"{platform.upper()}_BOT_TOKEN is not set")
    if not s.api_token:
        raise SystemExit(f"DEEPFAKE_API_TOKEN is not set (create one with `deepfake-token create {platform}`)")
    return s
