"""facegen's HTTP inference service: python -m service (see service.settings for configuration)."""
