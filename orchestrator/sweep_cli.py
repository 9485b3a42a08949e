"""`ltkd sweep|resume|status`: added by the sweeps issue."""


def add_commands(commands) -> None:
    return None
