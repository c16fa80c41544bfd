//! RabbitMQ, looked at without changing it: the server's product and version (read from
//! its `connection.start`, which lapin does not expose), the login and vhost, every fleet
//! exchange and queue by passive declaration (each on a fresh channel, since a 404 closes
//! it), consumers on `turns` and `metrics`, dead letters waiting, and a reply queue for every
//! gateway the registry in Redis lists.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::topology;

use super::{Check, host_port, io_words};

const B: &str = "rabbitmq";
const VAR: &str = "WHISPERFLEET_AMQP_URL";

pub async fn checks(
    config: &Config,
    url: &SecretString,
    gateways: Option<&[String]>,
) -> Vec<Check> {
    let timeout = config.backends.broker_timeout;
    let raw = url.expose_secret();
    let uri: lapin::uri::AMQPUri = match raw.parse() {
        Ok(u) => u,
        Err(e) => {
            return vec![Check::fail(
                B,
                "reachable",
                format!("{VAR} is not an AMQP URL: {e}"),
                format!("set {VAR}=amqp://user:password@host:5672/vhost"),
            )];
        }
    };
    let tls = matches!(uri.scheme, lapin::uri::AMQPScheme::AMQPS);
    let at = host_port(raw, if tls { 5671 } else { 5672 });
    let vhost = uri.vhost.clone();
    let mut out = Vec::new();

    // The version, from the server's greeting (plain AMQP only; over TLS lapin's own
    // connection below still proves the server is there).
    let version = if tls {
        Ok(None)
    } else {
        server_version(&at, timeout).await.map(Some)
    };
    if let Err(e) = &version {
        out.push(Check::fail(
            B,
            "reachable",
            format!("{VAR}: {e} — is RabbitMQ running?"),
            format!("start RabbitMQ, or point {VAR} at the host and port it listens on"),
        ));
        return out;
    }

    let props = ConnectionProperties::default().with_connection_name("whisperfleet-doctor".into());
    let conn = match tokio::time::timeout(timeout, Connection::connect(raw, props)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            out.push(login_failure(
                &e.to_string(),
                &at,
                &vhost,
                &uri.authority.userinfo.username,
            ));
            return out;
        }
        Err(_) => {
            out.push(Check::fail(
                B,
                "reachable",
                format!("{VAR}: no AMQP handshake with {at} within {timeout:?}"),
                format!("check that {VAR} names RabbitMQ's AMQP port, or raise WHISPERFLEET_BROKER_TIMEOUT_MS"),
            ));
            return out;
        }
    };
    let server = match version {
        Ok(Some(v)) => v,
        _ => "RabbitMQ (version not read over TLS)".into(),
    };
    out.push(Check::ok(
        B,
        "reachable",
        format!("{server} at {at}, vhost {vhost:?}"),
    ));

    // Exchanges and queues, passively.
    let mut missing = Vec::new();
    for (name, kind) in [
        (topology::TURNS_EXCHANGE, ExchangeKind::Direct),
        (topology::REPLIES_EXCHANGE, ExchangeKind::Direct),
        (topology::METRICS_EXCHANGE, ExchangeKind::Direct),
        (topology::DEAD_EXCHANGE, ExchangeKind::Direct),
        (topology::CONTROL_EXCHANGE, ExchangeKind::Fanout),
    ] {
        match exchange_exists(&conn, name, kind, timeout).await {
            Ok(true) => {}
            Ok(false) => missing.push(format!("exchange {name}")),
            Err(e) => {
                out.push(Check::fail(
                    B,
                    "topology",
                    format!("cannot inspect exchange {name}: {e}"),
                    format!("check the permissions of {VAR}'s user on vhost {vhost:?}"),
                ));
                return close(conn, out, timeout).await;
            }
        }
    }
    let mut stats = std::collections::BTreeMap::new();
    for q in [
        topology::TURNS_QUEUE,
        topology::TURNS_DEAD_QUEUE,
        topology::METRICS_QUEUE,
        topology::METRICS_DEAD_QUEUE,
    ] {
        match queue(&conn, q, timeout).await {
            Ok(Some(s)) => {
                stats.insert(q, s);
            }
            Ok(None) => missing.push(format!("queue {q}")),
            Err(e) => {
                out.push(Check::fail(
                    B,
                    "topology",
                    format!("cannot inspect queue {q}: {e}"),
                    format!("check the permissions of {VAR}'s user on vhost {vhost:?}"),
                ));
                return close(conn, out, timeout).await;
            }
        }
    }
    if missing.is_empty() {
        out.push(Check::ok(
            B,
            "topology",
            "every fleet exchange and queue is declared",
        ));
    } else {
        out.push(Check::fail(
            B,
            "topology",
            format!("missing in vhost {vhost:?}: {}", missing.join(", ")),
            format!(
                "start the gateway, a worker or the metrics-writer once (each declares the topology), \
                 or point {VAR} at the vhost the fleet uses"
            ),
        ));
    }

    match stats.get(topology::TURNS_QUEUE) {
        None => out.push(Check::skip(
            B,
            "turns consumers",
            "no `turns` queue to look at",
        )),
        Some(&(ready, 0)) => out.push(Check::fail(
            B,
            "turns consumers",
            format!("no worker consumes `turns` ({ready} turns waiting)"),
            "start workers: the `worker` binary with this configuration, or \
             `docker compose -f deploy/docker-compose.yml up -d --scale worker=N`",
        )),
        Some(&(ready, n)) => out.push(Check::ok(
            B,
            "turns consumers",
            format!("{n} consumer(s) on `turns`, {ready} turns waiting"),
        )),
    }
    match stats.get(topology::METRICS_QUEUE) {
        None => {}
        Some(&(ready, 0)) => out.push(Check::warn(
            B,
            "metrics consumers",
            format!("no metrics-writer consumes `metrics` ({ready} events waiting)"),
            "start the `metrics-writer` binary with WHISPERFLEET_INFLUX_URL set",
        )),
        Some(&(ready, n)) => out.push(Check::ok(
            B,
            "metrics consumers",
            format!("{n} consumer(s) on `metrics`, {ready} events waiting"),
        )),
    }
    for dead in [topology::TURNS_DEAD_QUEUE, topology::METRICS_DEAD_QUEUE] {
        if let Some(&(ready, _)) = stats.get(dead)
            && ready > 0
        {
            out.push(Check::warn(
                B,
                dead,
                format!("{ready} dead letter(s) in `{dead}`"),
                format!(
                    "read their reason header {} (e.g. in the management UI) and fix the cause",
                    topology::HEADER_DEAD_REASON
                ),
            ));
        }
    }

    match gateways {
        None => out.push(Check::skip(
            B,
            "reply queues",
            "the gateway registry (in Redis) could not be read",
        )),
        Some([]) => out.push(Check::warn(
            B,
            "reply queues",
            "no gateway is registered: nobody sends turns or delivers replies",
            "start the gateway with the same WHISPERFLEET_REDIS_URL and WHISPERFLEET_REDIS_PREFIX",
        )),
        Some(ids) => {
            let mut bad = Vec::new();
            for id in ids {
                let q = topology::reply_queue(id);
                match queue(&conn, &q, timeout).await {
                    Ok(Some((_, c))) if c > 0 => {}
                    Ok(Some(_)) => bad.push(format!("{q} has no consumer")),
                    Ok(None) => bad.push(format!("{q} does not exist")),
                    Err(e) => bad.push(format!("{q}: {e}")),
                }
            }
            if bad.is_empty() {
                out.push(Check::ok(
                    B,
                    "reply queues",
                    format!(
                        "{} gateway(s) registered, each consuming its reply queue",
                        ids.len()
                    ),
                ));
            } else {
                out.push(Check::fail(
                    B,
                    "reply queues",
                    bad.join("; "),
                    "a registered gateway should consume replies.<GATEWAY_ID>: check that the \
                     gateway uses this vhost (WHISPERFLEET_AMQP_URL) and restart it",
                ));
            }
        }
    }
    close(conn, out, timeout).await
}

async fn close(conn: Connection, out: Vec<Check>, timeout: Duration) -> Vec<Check> {
    let _ = tokio::time::timeout(timeout, conn.close(200, "doctor done".into())).await;
    out
}

/// What a failed AMQP login means, in plain words.
fn login_failure(error: &str, at: &str, vhost: &str, user: &str) -> Check {
    if error.contains("ACCESS_REFUSED") || error.contains("access refused") || error.contains("403")
    {
        Check::fail(
            B,
            "login",
            format!("{VAR}: RabbitMQ at {at} refused user {user:?} (wrong user or password)"),
            format!(
                "put the right user and password in {VAR} (amqp://user:password@host:port/vhost)"
            ),
        )
    } else if error.contains("NOT_ALLOWED") || error.contains("vhost") || error.contains("530") {
        Check::fail(
            B,
            "login",
            format!(
                "{VAR}: vhost {vhost:?} does not exist at {at}, or user {user:?} may not use it"
            ),
            format!(
                "rabbitmqctl add_vhost {vhost} && rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*' \
                 (or fix the vhost, the URL's path, in {VAR})"
            ),
        )
    } else {
        Check::fail(
            B,
            "login",
            format!("{VAR}: cannot open an AMQP connection to {at}: {error}"),
            format!("check {VAR} (scheme, port, user, password, vhost)"),
        )
    }
}

/// `RabbitMQ 3.12.1`, from the server properties of `connection.start`: the client's
/// protocol header is all it takes for the server to send them.
async fn server_version(at: &str, timeout: Duration) -> Result<String, String> {
    let read = async {
        let mut s = tokio::net::TcpStream::connect(at)
            .await
            .map_err(|e| io_words(&e, at))?;
        s.write_all(b"AMQP\x00\x00\x09\x01")
            .await
            .map_err(|e| io_words(&e, at))?;
        let mut header = [0u8; 7];
        s.read_exact(&mut header)
            .await
            .map_err(|e| io_words(&e, at))?;
        if header[0] != 1 {
            return Err(format!("{at} does not speak AMQP 0-9-1"));
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if size > 1 << 20 {
            return Err(format!("{at} sent an implausible AMQP frame"));
        }
        let mut payload = vec![0u8; size + 1];
        s.read_exact(&mut payload)
            .await
            .map_err(|e| io_words(&e, at))?;
        payload.pop();
        Ok(payload)
    };
    let payload = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("no answer from {at} within {timeout:?}"))??;
    use lapin::protocol::{AMQPClass, connection::AMQPMethod};
    let props = match lapin::protocol::parse_class(&payload[..]) {
        Ok((_, AMQPClass::Connection(AMQPMethod::Start(start)))) => start.server_properties,
        _ => return Err(format!("{at} did not greet like an AMQP 0-9-1 server")),
    };
    let text = |k: &str| match props.inner().get(k) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    };
    Ok(format!(
        "{} {}",
        text("product").unwrap_or_else(|| "AMQP server".into()),
        text("version").unwrap_or_else(|| "(version unknown)".into())
    ))
}

async fn exchange_exists(
    conn: &Connection,
    name: &str,
    kind: ExchangeKind,
    timeout: Duration,
) -> Result<bool, String> {
    let ch = bounded(timeout, conn.create_channel()).await?;
    let opts = ExchangeDeclareOptions {
        passive: true,
        durable: true,
        ..Default::default()
    };
    match bounded(
        timeout,
        ch.exchange_declare(name.into(), kind, opts, FieldTable::default()),
    )
    .await
    {
        Ok(()) => {
            let _ = ch.close(200, "OK".into()).await;
            Ok(true)
        }
        Err(e) if e.contains("NOT_FOUND") || e.contains("404") => Ok(false),
        Err(e) => Err(e),
    }
}

/// (ready, consumers) of a queue, `None` when it does not exist.
async fn queue(
    conn: &Connection,
    name: &str,
    timeout: Duration,
) -> Result<Option<(u32, u32)>, String> {
    let ch = bounded(timeout, conn.create_channel()).await?;
    match bounded(
        timeout,
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        ),
    )
    .await
    {
        Ok(q) => {
            let _ = ch.close(200, "OK".into()).await;
            Ok(Some((q.message_count(), q.consumer_count())))
        }
        Err(e) if e.contains("NOT_FOUND") || e.contains("404") => Ok(None),
        Err(e) => Err(e),
    }
}

async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}
