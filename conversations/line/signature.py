"""X-Line-Signature: HMAC-SHA256 of the raw body under the channel secret."""
from linebot.v3.webhook import SignatureValidator


def signature_is_valid(*, body: bytes, signature: str, channel_secret: str) -> bool:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # The SDK's validator compares in constant time.
    return SignatureValidator(channel_secret).validate(text, signature)
