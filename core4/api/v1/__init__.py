"""Version 1 of core4's REST API, served at ``/core4/api/v1``."""
