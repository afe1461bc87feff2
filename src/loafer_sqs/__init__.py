"""SQS provider plugin for loafer-core (aiobotocore).

``pip install 'loafer-core[sqs]'``; registered as the ``sqs`` entry point of
``loafer.providers``. See ``docs/providers/sqs.md``. Settings objects (``SQSSettings``,
``SQSPublisherSettings``, ``SNSPublisherSettings``, ``AWSClient``):
:mod:`loafer_sqs.settings`.
"""

from loafer_sqs.handlers import SNSHandler, SQSHandler
from loafer_sqs.provider import SQSProvider
from loafer_sqs.publisher import SNSPublisher, SQSPublisher
from loafer_sqs.route import SNSQueueRoute, SQSRoute
from loafer_sqs.settings import (
    AWSClient,
    Closing,
    Lingers,
    SNSPublisherSettings,
    SQSPublisherSettings,
    SQSSettings,
)
from loafer_sqs.translator import SNSMessageTranslator, SQSMessageTranslator, SQSTextTranslator

__all__ = [
    "AWSClient",
    "Closing",
    "Lingers",
    "SNSHandler",
    "SNSMessageTranslator",
    "SNSPublisher",
    "SNSPublisherSettings",
    "SNSQueueRoute",
    "SQSHandler",
    "SQSMessageTranslator",
    "SQSProvider",
    "SQSPublisher",
    "SQSPublisherSettings",
    "SQSRoute",
    "SQSSettings",
    "SQSTextTranslator",
]
