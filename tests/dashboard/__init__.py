"""End-to-end tests of the web dashboard (headless Chromium)."""
