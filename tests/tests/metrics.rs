//! metrics-writer on real RabbitMQ against a private victoria-metrics (the InfluxDB-API
//! server here), with a fault-injecting proxy where the server must misbehave.

use std::sync::atomic::Ordering;
use std::time::Duration;

use whisperfleet_shared::ports::broker::{Broker, Message};
use whisperfleet_shared::topology;
use whisperfleet_testkit::*;

/// `events` metric events of `per_event` points each in measurement `m`; point j of event i
/// is series `m_v{s=j}` at millisecond `base + i` with value `i`, so every point is unique
/// and a rewrite of the same point cannot add a sample.
fn events(m: &str, first: usize, events: usize, per_event: usize) -> Vec<Message> {
    let base_ms: i64 = 1_700_000_000_000;
    (first..first + events)
        .map(|i| {
            let body: Vec<String> = (0..per_event)
                .map(|j| format!("{m},s={j} v={i}i {}", (base_ms + i as i64) * 1_000_000))
                .collect();
            Message::line_protocol(body.join("\n").into_bytes())
        })
        .collect()
}

async fn publish(fleet: &Fleet, msgs: Vec<Message>) {
    let broker = broker_for(fleet).await;
    for chunk in msgs.chunks(1000) {
        broker
            .publish_many(chunk.to_vec())
            .await
            .expect("published");
    }
}

fn writer_env(
    influx: &str,
    batch: usize,
    flush_ms: u64,
    sample_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("WHISPERFLEET_INFLUX_URL", influx.to_string()),
        ("WHISPERFLEET_METRICS_BATCH_SIZE", batch.to_string()),
        (
            "WHISPERFLEET_METRICS_FLUSH_INTERVAL_MS",
            flush_ms.to_string(),
        ),
        (
            "WHISPERFLEET_METRICS_SAMPLE_INTERVAL_MS",
            sample_ms.to_string(),
        ),
    ]
}

fn measurement(fleet: &Fleet) -> String {
    format!("m{}", &fleet.name[fleet.name.len() - 10..])
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_thousand_points_land_exactly_in_one_request_per_batch() {
    let mut fleet = Fleet::new("mw_bulk").unwrap();
    let vm = VictoriaMetrics::start().await.unwrap();
    let m = measurement(&fleet);
    publish(&fleet, events(&m, 0, 5_000, 10)).await;
    let started = std::time::Instant::now();
    // Flushing by time is pushed out of the way: this measures batching at full load.
    fleet
        .spawn(
            "metrics-writer",
            "writer",
            &writer_env(&vm.url(), 5_000, 2_000, 3_600_000),
        )
        .unwrap();
    let name = format!("{m}_v");
    eventually(Duration::from_secs(90), "50,000 points", || async {
        vm.count(&name).await.unwrap() >= 50_000
    })
    .await;
    // A measurement for the record (includes process start and polling), not an assertion.
    eprintln!(
        "50,000 points written in {:.2}s (>= {:.0} points/s including start-up)",
        started.elapsed().as_secs_f64(),
        50_000.0 / started.elapsed().as_secs_f64()
    );
    let series = vm.export(&name).await.unwrap();
    let count: usize = series
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(count, 50_000, "every point exactly once");
    let sum: f64 = series
        .iter()
        .flat_map(|s| {
            s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
        })
        .sum();
    assert_eq!(
        sum,
        10.0 * (0..5_000).sum::<usize>() as f64,
        "no value changed"
    );
    let requests = vm.write_requests().await.unwrap();
    eprintln!("{requests} write requests for 50,000 points");
    assert!(
        requests <= 50_000 / 5_000 + 1,
        "{requests} write requests for 50,000 points at batch size 5,000"
    );
    // Acked, not only written: after a clean stop nothing is back in the queue.
    fleet.signal("writer", "TERM").unwrap();
    assert_eq!(
        fleet
            .wait_exit("writer", Duration::from_secs(20))
            .await
            .unwrap(),
        Some(0)
    );
    let stats = broker_for(&fleet)
        .await
        .queue_stats(topology::METRICS_QUEUE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.ready, 0);
}

/// InfluxDB down for ~20 s while the fleet goes on at 60 turns/s (one metric event per turn,
/// as workers publish them): the queue is the buffer, not the writer. RabbitMQ never sees more
/// than `METRICS_MAX_PENDING` deliveries unacked by the writer although the backlog grows far
/// past it, and once the server is back every point lands exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_at_sixty_turns_a_second_holds_at_most_max_pending_and_loses_nothing() {
    const MAX_PENDING: u64 = 200;
    const RATE: usize = 60;
    const SECONDS: usize = 20;
    let mut fleet = Fleet::new("mw_outage").unwrap();
    let mut vm = VictoriaMetrics::start().await.unwrap();
    let m = measurement(&fleet);
    let mut env = writer_env(&vm.url(), 1_000, 100, 3_600_000);
    env.push(("WHISPERFLEET_METRICS_MAX_PENDING", MAX_PENDING.to_string()));
    let pid = fleet.spawn("metrics-writer", "writer", &env).unwrap();
    let name = format!("{m}_v");
    publish(&fleet, events(&m, 0, 1_000, 5)).await;
    eventually(Duration::from_secs(30), "first half", || async {
        vm.count(&name).await.unwrap() >= 5_000
    })
    .await;
    let baseline = rss_kib(pid).unwrap();
    vm.stop();
    let broker = broker_for(&fleet).await;
    let mut peak_unacked = 0;
    let mut peak_rss = baseline;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE as u64));
    for i in 0..RATE * SECONDS {
        tick.tick().await;
        broker
            .publish_many(events(&m, 1_000 + i, 1, 5))
            .await
            .expect("published");
        if i % (RATE / 2) == 0 {
            peak_unacked = peak_unacked.max(fleet.unacked(topology::METRICS_QUEUE));
            peak_rss = peak_rss.max(rss_kib(pid).unwrap());
        }
    }
    let backlog = broker
        .queue_stats(topology::METRICS_QUEUE)
        .await
        .unwrap()
        .unwrap();
    vm.resume().await.unwrap();
    let total = 5 * (1_000 + RATE * SECONDS);
    eventually(
        Duration::from_secs(90),
        "every point after the outage",
        || async { vm.count(&name).await.unwrap() >= total },
    )
    .await;
    assert_eq!(vm.count(&name).await.unwrap(), total);
    eprintln!(
        "during the outage: writer unacked peak {peak_unacked} (max pending {MAX_PENDING}), \
         ready backlog {} at its end, writer RSS {baseline} KiB -> peak {peak_rss} KiB",
        backlog.ready
    );
    assert!(
        peak_unacked > 0,
        "the writer held deliveries during the outage (else the bound was never tested)"
    );
    assert!(
        peak_unacked <= MAX_PENDING,
        "the writer held {peak_unacked} deliveries unacked, more than {MAX_PENDING}"
    );
    assert!(
        backlog.ready >= (RATE * SECONDS) as u64 - MAX_PENDING - RATE as u64,
        "the backlog waited in the queue: {} ready",
        backlog.ready
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_and_malformed_events_are_dead_lettered_and_the_good_points_land() {
    let mut fleet = Fleet::new("mw_reject").unwrap();
    let vm = VictoriaMetrics::start().await.unwrap();
    let proxy = FaultProxy::start(vm.url()).await.unwrap();
    proxy.fail_next.store(1, Ordering::SeqCst); // one 429 with Retry-After first
    let m = measurement(&fleet);
    let mut msgs = events(&m, 0, 100, 3);
    msgs.insert(
        10,
        Message::line_protocol(b"this is not line protocol".to_vec()),
    );
    msgs.insert(40, Message::line_protocol(format!("{m} v=").into_bytes()));
    msgs.insert(60, Message::line_protocol(Vec::new()));
    // A turn's event, in its trace: the writer's log of its dead letter names the trace.
    let trace = whisperfleet_shared::trace::TraceContext::new_root();
    msgs.insert(
        30,
        Message::line_protocol(format!("poison_{m} v=1i").into_bytes()).with_trace(&trace),
    );
    msgs.insert(
        80,
        Message::line_protocol(format!("{m},s=9 v=1i\npoison_{m} v=2i").into_bytes()),
    );
    publish(&fleet, msgs).await;
    fleet
        .spawn(
            "metrics-writer",
            "writer",
            &writer_env(&proxy.url, 1_000, 100, 3_600_000),
        )
        .unwrap();
    let name = format!("{m}_v");
    eventually(Duration::from_secs(60), "the good points", || async {
        vm.count(&name).await.unwrap() >= 300
    })
    .await;
    assert_eq!(vm.count(&name).await.unwrap(), 300, "good points only");
    assert_eq!(vm.count(&format!("poison_{m}_v")).await.unwrap(), 0);
    // Five dead letters, each with its reason.
    let broker = broker_for(&fleet).await;
    eventually(Duration::from_secs(20), "5 dead letters", || async {
        broker
            .queue_stats(topology::METRICS_DEAD_QUEUE)
            .await
            .unwrap()
            .is_some_and(|s| s.ready == 5)
    })
    .await;
    let conn = lapin::Connection::connect(&fleet.amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut reasons = Vec::new();
    while let Some(d) = ch
        .basic_get(
            topology::METRICS_DEAD_QUEUE.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let h = d.delivery.properties.headers().clone().unwrap_or_default();
        match h.inner().get(topology::HEADER_DEAD_REASON) {
            Some(lapin::types::AMQPValue::LongString(s)) => {
                reasons.push(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            other => panic!("dead letter without a reason: {other:?}"),
        }
    }
    assert_eq!(reasons.len(), 5);
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("poison point rejected"))
            .count(),
        2,
        "the server's reason is kept: {reasons:?}"
    );
    assert!(
        proxy.requests.load(Ordering::SeqCst) >= 3,
        "429 retried, rejected bisected"
    );
    let log = fleet.log_of("writer");
    assert!(
        log.lines()
            .any(|l| l.contains("dead-lettering a metric event") && l.contains(&trace.trace_id())),
        "the dead letter's log line names its trace {}:\n{log}",
        trace.trace_id()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writer_killed_mid_stream_lands_everything_after_restart() {
    let mut fleet = Fleet::new("mw_kill").unwrap();
    let vm = VictoriaMetrics::start().await.unwrap();
    let m = measurement(&fleet);
    let name = format!("{m}_v");
    publish(&fleet, events(&m, 0, 3_000, 10)).await;
    let env = writer_env(&vm.url(), 500, 100, 3_600_000);
    fleet.spawn("metrics-writer", "writer-1", &env).unwrap();
    eventually(Duration::from_secs(30), "some points", || async {
        vm.count(&name).await.unwrap() > 0
    })
    .await;
    fleet.signal("writer-1", "KILL").unwrap();
    fleet
        .wait_exit("writer-1", Duration::from_secs(5))
        .await
        .unwrap();
    fleet.spawn("metrics-writer", "writer-2", &env).unwrap();
    eventually(Duration::from_secs(60), "every point", || async {
        vm.count(&name).await.unwrap() >= 30_000
    })
    .await;
    assert_eq!(vm.count(&name).await.unwrap(), 30_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_depth_samples_match_rabbitmq() {
    let mut fleet = Fleet::new("mw_depth").unwrap();
    let vm = VictoriaMetrics::start().await.unwrap();
    let broker = broker_for(&fleet).await;
    let turns: Vec<Message> = (0..37)
        .map(|i| {
            Message::json(
                topology::TURNS_EXCHANGE,
                topology::TURNS_ROUTING_KEY,
                format!("{{\"n\":{i}}}").into_bytes(),
            )
        })
        .collect();
    broker.publish_many(turns).await.unwrap();
    fleet
        .spawn(
            "metrics-writer",
            "writer",
            &writer_env(&vm.url(), 1_000, 100, 300),
        )
        .unwrap();
    eventually(Duration::from_secs(30), "queue samples", || async {
        vm.count("fleet_queue_ready").await.unwrap() >= 8
    })
    .await;
    let series = vm
        .export("fleet_queue_ready|fleet_queue_consumers")
        .await
        .unwrap();
    let last = |name: &str, queue: &str| -> Option<f64> {
        series
            .iter()
            .find(|s| s["metric"]["__name__"] == name && s["metric"]["queue"] == queue)
            .and_then(|s| s["values"].as_array()?.last()?.as_f64())
    };
    for q in [
        topology::TURNS_QUEUE,
        topology::TURNS_DEAD_QUEUE,
        topology::METRICS_QUEUE,
        topology::METRICS_DEAD_QUEUE,
    ] {
        let stats = broker.queue_stats(q).await.unwrap().unwrap();
        assert!(last("fleet_queue_ready", q).is_some(), "no sample for {q}");
        if q != topology::METRICS_QUEUE {
            // `metrics` itself moves while the writer drains its own samples.
            assert_eq!(
                last("fleet_queue_ready", q),
                Some(stats.ready as f64),
                "{q}"
            );
        }
        assert_eq!(
            last("fleet_queue_consumers", q),
            Some(f64::from(stats.consumers)),
            "{q}"
        );
    }
    assert_eq!(last("fleet_queue_ready", "turns"), Some(37.0));
    assert_eq!(last("fleet_queue_consumers", "metrics"), Some(1.0));
    assert!(
        vm.count("metrics_writer_points_written").await.unwrap() > 0,
        "writer health written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_json_shows_unconsumed_turns() {
    let fleet = Fleet::new("mw_queues").unwrap();
    let broker = broker_for(&fleet).await;
    let turns: Vec<Message> = (0..100)
        .map(|i| {
            Message::json(
                topology::TURNS_EXCHANGE,
                topology::TURNS_ROUTING_KEY,
                format!("{{\"n\":{i}}}").into_bytes(),
            )
        })
        .collect();
    broker.publish_many(turns).await.unwrap();
    let out = fleet.cli(&["queues", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("queues --json parses");
    let turns = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "turns")
        .expect("turns listed");
    assert_eq!(turns["ready"], 100);
    assert_eq!(turns["consumers"], 0);
}

/// The sampler finds reply queues in the gateways' registry (one Redis call per sample, no
/// keyspace scan): a running gateway's queue is sampled; a gateway whose heartbeats stopped
/// is left out, though its queue still exists, and is pruned from the registry.
#[tokio::test(flavor = "multi_thread")]
async fn reply_queues_to_sample_come_from_the_gateway_registry() {
    use whisperfleet_adapters::cache::redis::RedisCache;
    use whisperfleet_metrics_writer::sampler::fleet_queues;

    let mut fleet = Fleet::new("mw_registry").unwrap();
    let broker = broker_for(&fleet).await;
    let cache = RedisCache::new(
        REDIS_URL.to_string().into(),
        &fleet.prefix,
        Duration::from_millis(500),
    )
    .unwrap();
    let gone = "gw-gone";
    broker.ensure_reply_queue(gone).await.unwrap();
    // Its last heartbeat, two minutes ago by Redis's clock.
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    let registry = format!("{}{}", fleet.prefix, topology::GATEWAY_REGISTRY);
    let _: () = redis::cmd("ZADD")
        .arg(&registry)
        .arg((secs - 120) * 1000)
        .arg(gone)
        .query_async(&mut redis)
        .await
        .unwrap();

    fleet.spawn_gateway(&[]).await.unwrap();
    let live = topology::reply_queue(&fleet.env["WHISPERFLEET_GATEWAY_ID"]);
    let sampled = || async {
        fleet_queues(broker.as_ref(), Some(&cache))
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.queue)
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(10),
        "the gateway's reply queue sampled",
        || async { sampled().await.contains(&live) },
    )
    .await;
    let names = sampled().await;
    assert!(
        !names.contains(&topology::reply_queue(gone)),
        "a gateway without heartbeats is sampled: {names:?}"
    );
    assert!(names.contains(&topology::TURNS_QUEUE.to_string()));
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&registry)
        .arg(gone)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(score, None, "the stale gateway stays in the registry");
}

/// An InfluxDB or management URL the writer cannot use is a configuration error: the writer
/// refuses to start and names the variable, instead of retrying a write that can never work
/// (or silently sampling without the management API).
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_url_stops_the_writer_at_start_naming_its_variable() {
    let mut fleet = Fleet::new("mw_badurl").unwrap();
    let cases = [
        ("WHISPERFLEET_INFLUX_URL", "http://influx:notaport"),
        ("WHISPERFLEET_INFLUX_URL", "influx:8086"),
        ("WHISPERFLEET_INFLUX_URL", "ftp://influx:8086"),
        (
            "WHISPERFLEET_RABBITMQ_MANAGEMENT_URL",
            "http://mgmt:notaport",
        ),
    ];
    for (i, (var, value)) in cases.iter().enumerate() {
        let label = format!("writer-{i}");
        let mut env = vec![(*var, value.to_string())];
        if *var != "WHISPERFLEET_INFLUX_URL" {
            env.push(("WHISPERFLEET_INFLUX_URL", "http://127.0.0.1:1".into()));
        }
        fleet.spawn("metrics-writer", &label, &env).unwrap();
        let status = fleet.wait_exit(&label, Duration::from_secs(20)).await;
        let log = fleet.log_of(&label);
        if status.is_err() {
            let _ = fleet.signal(&label, "KILL");
        }
        let status = status.unwrap_or_else(|_| panic!("{var}={value}: still running\n{log}"));
        assert_ne!(status, Some(0), "{var}={value}: exited 0\n{log}");
        assert!(
            log.contains(var),
            "{var}={value}: the error does not name the variable\n{log}"
        );
    }
}
