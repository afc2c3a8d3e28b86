"""The thin Twisted/Autobahn glue in front of the sans-IO platform sessions: WebSocket frames in
and out (:mod:`~mediaproxy.server.websocket`), the call's view of a connection
(:mod:`~mediaproxy.server.port`), HTTP routing and plain GETs (:mod:`~mediaproxy.server.routing`),
and the metrics listener's pages (:mod:`~mediaproxy.server.status`)."""
