"""Messages, framing and trust shared by the engine and its host agents."""

from stackwright.protocol.framing import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
