"""Request rates per user and per address."""
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class _RateFromSettings:
    # DRF reads the rates once at import; reading them per request lets tests and
    # settings overrides change them.
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_RateFromSettings, UserRateThrottle):
    pass


class AnonThrottle(_RateFromSettings, AnonRateThrottle):
    pass
