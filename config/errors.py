"""The one error configuration raises."""


class ConfigError(Exception):
    """Raised when settings are bad; carries every problem found, not only the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "bad configuration:\n" + "\n".join(f"  - {problem}" for problem in self.problems)
        )
