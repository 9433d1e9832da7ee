"""The lab: emulated links (userspace delay / loss / jitter responders) for ``edgesteer lab``."""
