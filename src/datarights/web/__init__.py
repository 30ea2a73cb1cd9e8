"""The owners web page and JSON API (`datarights serve`)."""
