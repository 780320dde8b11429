"""A mentor behind an OpenAI-compatible server, configured on the chat model as ``ChatOpenAI`` is.

Users of hosted models build them with ``base_url``, ``api_key``, ``timeout`` and ``max_retries``; here
the same settings reach the one model that may run elsewhere, the mentor (the generator writes every
word, so it always runs in process). The key is a ``SecretStr`` read from the environment by default,
so it never shows in a repr, a log line or a serialized model; it leaves the process only in the
``Authorization`` header of the mentor's requests.
"""

from __future__ import annotations

from langchain_core.utils import secret_from_env
from pydantic import AliasChoices, Field, SecretStr

from mentorcollab_langchain.backends.base import Backend
from mentorcollab_langchain.chat.settings import EngineSettings
from mentorcollab_langchain.errors import ConfigError

# Where ``mentor_api_key`` comes from when it is not given: the first of these that is set (the second
# is what OpenAI-compatible clients, and ``OpenAICompatibleBackend`` on its own, read).
MENTOR_API_KEY_ENV = ("MENTORCOLLAB_MENTOR_API_KEY", "OPENAI_API_KEY")


class RemoteMentorSettings(EngineSettings):  # type: ignore[misc,valid-type]  # a class built by create_model
    """The chat model's settings for a remote mentor (its engine settings come from ``EngineSettings``)."""

    mentor_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("mentor_base_url", "base_url"),
        description="an OpenAI-compatible server (vLLM, SGLang, llama.cpp) serving the mentor; unset, the mentor "
        "runs in process",
    )
    mentor_served_name: str = Field(
        default="mentor", description="the model name the server at mentor_base_url knows the mentor by"
    )
    mentor_api_key: SecretStr | None = Field(
        default_factory=secret_from_env(list(MENTOR_API_KEY_ENV), default=None),
        validation_alias=AliasChoices("mentor_api_key", "api_key"),
        description=f"the key of the server at mentor_base_url (default: {' or else '.join(MENTOR_API_KEY_ENV)})",
    )
    timeout: float = Field(default=60.0, gt=0, description="seconds before one request to a remote mentor gives up")
    max_retries: int = Field(
        default=3, ge=0, description="retries of a failed remote-mentor request (connection errors, 429, 5xx)"
    )

    @property
    def lc_secrets(self) -> dict[str, str]:
        """Serialization writes the key as a reference to its variable, never its value."""
        return {"mentor_api_key": MENTOR_API_KEY_ENV[0]}

    def check_remote_mentor(self, mentor: object) -> None:
        """Fail at construction, not at the first probe, on a malformed URL or a ``mentor`` that names no
        tokenizer (the chat template comes from it)."""
        if self.mentor_base_url is None:
            return
        from mentorcollab_langchain.backends.openai_compatible import check_server_url

        check_server_url(self.mentor_base_url)
        if not isinstance(mentor, str):
            raise ConfigError("mentor_base_url needs mentor to name the mentor's tokenizer, not a backend object")

    def remote_mentor(self, tokenizer: str) -> Backend:
        """The mentor at ``mentor_base_url``, its prompts rendered with ``tokenizer``'s chat template."""
        from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend

        key = self.mentor_api_key.get_secret_value() if self.mentor_api_key else None
        return OpenAICompatibleBackend(
            str(self.mentor_base_url),
            model=self.mentor_served_name,
            tokenizer=tokenizer,
            api_key_env=None,  # the environment was read into mentor_api_key
            api_key=key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
