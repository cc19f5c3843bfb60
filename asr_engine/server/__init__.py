"""Websocket streaming server (see the server issue)."""
