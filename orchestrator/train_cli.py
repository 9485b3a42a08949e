"""`ltkd train teacher|student`: filled in by the engine issue."""


def add_commands(commands) -> None:
    return None
