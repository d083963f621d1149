"""builtin_interfaces/Time as one integer: the nodes match samples by stamp (a command or policy step
carries the stamp of the state it answered), and bags index messages by it."""


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def sender_id(info: dict) -> bytes:
    """The publisher's global id from a subscription callback's message info (b"" if not given)."""
    gid = info.get("publisher_gid") if isinstance(info, dict) else None
    return bytes(gid["data"]) if gid else b""
