"""The broker's HTTP listener (`http.listeners`): /health, /metrics, the web console
and the admin endpoint, as one ASGI app served by hypercorn's trio worker inside the
broker's own nursery. Route handlers are plain functions of (broker, HttpRequest) that
answer an HttpResponse, testable without a socket."""
