"""The REST API's shared base: named in REST_FRAMEWORK, used by every app's API module."""
