"""What an SQS provider, SQS publisher or SNS publisher says of itself
(:class:`~loafer_core.kit.Describable`): never a credential."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from loafer_core import kit
from loafer_sqs.errors import mask
from loafer_sqs.settings import AWSClient

SQS_BINDING = "0.2.0"
SNS_BINDING = "0.1.0"


def _server(service: str, options: AWSClient, resource: str | None) -> kit.Server:
    """The SQS/SNS endpoint: ``endpoint_url``'s host, else the queue URL's, else the
    regional AWS endpoint (a ``{region}`` variable when the region is not given)."""
    for url in (options.endpoint_url, resource):
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            found = kit.host_of(url)
            if found is not None:
                return kit.Server(protocol=service, host=found[0])
    region = options.region_name
    if region:
        return kit.Server(protocol=service, host=f"{service}.{region}.amazonaws.com")
    return kit.Server(
        protocol=service,
        host=f"{service}.{{region}}.amazonaws.com",
        variables={"region": {"description": "the AWS region (from the AWS configuration)"}},
    )


def _address(options: AWSClient) -> str | None:
    endpoint = options.endpoint_url
    return mask(endpoint) if endpoint else None


def _last_segment(name: str) -> str:
    return unquote(name.rstrip("/").rpartition("/")[2]) or name


def _queue(name: str) -> dict[str, Any]:
    short = _last_segment(name)
    return {"name": short, "fifoQueue": short.endswith(".fifo")}


def provider(shown: str, options: AWSClient, dead_letter: str | None) -> kit.Description:
    """A consumer of the queue ``shown`` (its name or masked URL)."""
    binding: dict[str, Any] = {"queue": _queue(shown), "bindingVersion": SQS_BINDING}
    if dead_letter:
        binding["deadLetterQueue"] = _queue(mask(dead_letter))
    return kit.Description(
        kind="sqs",
        system="aws_sqs",
        destination=_last_segment(shown),
        address=_address(options),
        server=_server("sqs", options, shown),
        bindings={"sqs": binding},
    )


def sqs_publisher(queue: str | None, options: AWSClient) -> kit.Description:
    """A publisher to ``queue`` (a name or URL; None: named per message)."""
    shown = mask(queue) if isinstance(queue, str) else None
    bindings = {"sqs": {"queue": _queue(shown), "bindingVersion": SQS_BINDING}} if shown else {}
    return kit.Description(
        kind="sqs",
        system="aws_sqs",
        destination=_last_segment(shown) if shown else None,
        address=_address(options),
        server=_server("sqs", options, shown),
        bindings=bindings,
    )


def sns_publisher(topic: str | None, options: AWSClient) -> kit.Description:
    """A publisher to ``topic`` (a name or ARN; None: named per message)."""
    server = _server("sns", options, None)
    if isinstance(topic, str) and topic.startswith("arn:") and "{region}" in server.host:
        region = topic.split(":")[3] if topic.count(":") >= 5 else ""
        if region:
            server = kit.Server(protocol="sns", host=f"sns.{region}.amazonaws.com")
    name = topic.rpartition(":")[2] if isinstance(topic, str) else None
    return kit.Description(
        kind="sns",
        system="aws_sns",
        destination=topic if isinstance(topic, str) else None,
        address=_address(options),
        server=server,
        bindings={"sns": {"name": name, "bindingVersion": SNS_BINDING}} if name else {},
    )
