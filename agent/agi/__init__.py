"""FastAGI adapter: the server (server.py: socket, limits, deadlines), one session's commands
and replies (session.py), the header block (headers.py) and the route interface (routing.py).

Routes translate an AGI request into a service call and the service's result into channel
variables. They hold no policy.
"""
