"""Durability through real server processes: kill -9 crashes and several instances."""
