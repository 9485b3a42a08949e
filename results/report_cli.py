"""`ltkd report`: added by the results issue."""


def add_commands(commands) -> None:
    return None
