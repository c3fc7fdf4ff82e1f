"""FastAGI adapter: the wire protocol (server.py) and the route handlers (outbound, inbound).

Routes translate an AGI request into a service call and the service's result into channel
variables. They hold no policy.
"""
