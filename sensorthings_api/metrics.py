"""The SensorThings API's Prometheus metrics (served on /metrics at health.port; see README.md)."""

from prometheus_client import Counter, Histogram

RESOURCES = ("root", "Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors",
             "ObservedProperties", "Observations", "other")  # fmt: skip
STATUSES = ("200", "400", "404", "503", "500")

REQUESTS = Counter(
    "twinpipe_sensorthings_requests",
    "Requests answered, by the collection their path starts with (resource) and HTTP status",
    ["resource", "status"],
)
DURATION = Histogram(
    "twinpipe_sensorthings_request_duration_seconds",
    "Time to answer a request, InfluxDB queries included, by resource",
    ["resource"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INFLUX_ERRORS = Counter(
    "twinpipe_sensorthings_influx_errors", "Requests answered 503 because InfluxDB failed or did not answer"
)

for resource in RESOURCES:
    DURATION.labels(resource)
    for status in STATUSES:
        REQUESTS.labels(resource, status)


def resource_of(path: str) -> str:
    """The bounded label for a path below /v1.1: its first collection name, "root" or "other"."""
    head = path.strip("/").split("/", 1)[0].split("(", 1)[0]
    if not head:
        return "root"
    return head if head in RESOURCES else "other"
