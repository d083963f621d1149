"""builtin_interfaces/Time as one integer: the nodes match samples by stamp (a command or policy step
carries the stamp of the state it answered), and bags index messages by it."""


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
