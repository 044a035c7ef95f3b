"""Agent screen pop and supervisor wallboard (aiohttp + jinja2): issues 3 and 5.

Consumes the CTI core's domain events (``cti.events``); nothing here yet.
"""
