//! RabbitMQ faults a test can cause on the shared broker: a memory alarm (every publisher on
//! the node is blocked while it lasts) and closing chosen connections of one test's vhost.
//!
//! The alarm is node-wide, not per vhost: tests that raise it are named `alarm_…`, left out of
//! the default nextest run and run alone afterwards by `scripts/test` (`-j1`), so no other
//! test's publishes are blocked by it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{Fleet, run};

/// The watermark that puts the node into a memory alarm at once: any node uses more than
/// 0.00001 % of the machine's memory.
const ALARM_WATERMARK: &str = "0.0000001";

/// A raised memory alarm on the local RabbitMQ node; dropping it (also while a failing test
/// unwinds) restores the watermark the node had and waits until the alarm is gone.
pub struct MemoryAlarm {
    /// Arguments of `rabbitmqctl set_vm_memory_high_watermark` that restore the old value.
    restore: Vec<String>,
    cleared: bool,
}

impl MemoryAlarm {
    /// Lowers the memory watermark so far that the node raises its memory alarm, and waits
    /// until the alarm is in effect.
    pub fn raise() -> anyhow::Result<Self> {
        let restore = restore_args()?;
        // From here on the guard exists, so even a failed wait below restores the node.
        let alarm = Self {
            restore,
            cleared: false,
        };
        run(Command::new("rabbitmqctl").args(["set_vm_memory_high_watermark", ALARM_WATERMARK]))?;
        wait_for_alarm(true)?;
        Ok(alarm)
    }

    /// Restores the watermark now and waits until the alarm is gone (what dropping does, with
    /// the error reported instead of printed).
    pub fn clear(mut self) -> anyhow::Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        if self.cleared {
            return Ok(());
        }
        run(Command::new("rabbitmqctl")
            .arg("set_vm_memory_high_watermark")
            .args(&self.restore))?;
        self.cleared = true;
        wait_for_alarm(false)
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!(
                "could not restore RabbitMQ's memory watermark ({e:#}); run `rabbitmqctl \
                 set_vm_memory_high_watermark {}` by hand",
                self.restore.join(" ")
            );
        }
    }
}

/// The node's current watermark as `set_vm_memory_high_watermark` arguments: `0.4` (a
/// fraction of memory) or `absolute 1073741824`. A value left at the alarm's own watermark
/// (a test process killed before its guard ran) falls back to the configured one.
fn restore_args() -> anyhow::Result<Vec<String>> {
    let now = eval("vm_memory_monitor:get_vm_memory_high_watermark().")?;
    if let Some(args) = watermark_args(&now)
        && !is_alarm_watermark(&args)
    {
        return Ok(args);
    }
    let configured = eval("application:get_env(rabbit, vm_memory_high_watermark).")?;
    let configured = configured
        .trim()
        .strip_prefix("{ok,")
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or("0.4");
    Ok(watermark_args(configured)
        .filter(|a| !is_alarm_watermark(a))
        .unwrap_or_else(|| vec!["0.4".into()]))
}

fn is_alarm_watermark(args: &[String]) -> bool {
    matches!(args, [f] if f.parse::<f64>().is_ok_and(|f| f < 0.01))
}

/// Parses Erlang's `0.4`, `{absolute,1073741824}` or `{absolute,"1GB"}`.
fn watermark_args(erlang: &str) -> Option<Vec<String>> {
    let v = erlang.trim();
    if let Some(inner) = v
        .strip_prefix("{absolute,")
        .and_then(|s| s.strip_suffix('}'))
    {
        return Some(vec![
            "absolute".into(),
            inner.trim().trim_matches('"').into(),
        ]);
    }
    v.parse::<f64>().ok().map(|_| vec![v.to_string()])
}

fn eval(expr: &str) -> anyhow::Result<String> {
    run(Command::new("rabbitmqctl").args(["eval", expr]))
}

/// Waits until the node's memory alarm is (or is no longer) in effect.
fn wait_for_alarm(raised: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alarms = eval("rabbit_alarm:get_alarms().")?;
        if alarms.contains("memory") == raised {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the memory alarm is still {}: {alarms}",
                if raised { "off" } else { "on" }
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Fleet {
    /// Deliveries of `queue` handed to a consumer and not settled yet, as RabbitMQ counts
    /// them (0 when the queue is not there). A quorum queue refreshes this count every few
    /// seconds: wait for it with `eventually`, do not read it once.
    pub fn unacked(&self, queue: &str) -> u64 {
        let listed = run(Command::new("rabbitmqctl").args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "-p",
            &self.vhost,
            "name",
            "messages_unacknowledged",
        ]))
        .expect("listing queues");
        listed
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(queue)).then(|| w.next()?.parse().ok())?
            })
            .next()
            .unwrap_or(0)
    }

    /// Deliveries of `queue` still unacked once the scenario settled: RabbitMQ's count, read
    /// until it is 0 or two of its refresh periods passed, so a count from before the last
    /// acks is not taken for a stuck delivery.
    pub async fn stuck_unacked(&self, queue: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            let n = self.unacked(queue);
            if n == 0 || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Deletes `queue` in this fleet's vhost, as an operator (or `x-expires`) would.
    pub fn delete_queue(&self, queue: &str) {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", "--vhost", &self.vhost, queue])
            .output()
            .expect("running rabbitmqctl");
        assert!(
            out.status.success(),
            "deleting {queue}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Closes this fleet's broker connections whose client-given name (`<process>/publish`,
    /// `<process>/consume`) contains `name_contains`, as an operator or a network failure
    /// would; returns how many were closed. Only this fleet's vhost is touched, so tests that
    /// run side by side do not close each other's connections.
    pub fn close_connections(&self, name_contains: &str) -> anyhow::Result<usize> {
        // The table, not `--formatter json`: only the table shows a pid `close_connection`
        // takes (`<rabbit@host.…>`). One connection a line: pid, vhost, client properties.
        let listed = run(Command::new("rabbitmqctl").args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "vhost",
            "client_properties",
        ]))?;
        let mut closed = 0;
        for line in listed.lines() {
            let mut cols = line.splitn(3, '\t');
            let (Some(pid), Some(vhost), Some(props)) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            if vhost != self.vhost
                || !connection_name(props).is_some_and(|n| n.contains(name_contains))
            {
                continue;
            }
            run(Command::new("rabbitmqctl").args(["close_connection", pid, "closed by a test"]))?;
            closed += 1;
        }
        Ok(closed)
    }
}

/// The `connection_name` client property in `list_connections`' table:
/// `[…,{"connection_name","gateway@gw-1/publish"},…]`.
fn connection_name(props: &str) -> Option<&str> {
    let start = props.find(r#"{"connection_name",""#)? + r#"{"connection_name",""#.len();
    let len = props[start..].find('"')?;
    Some(&props[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_become_their_restore_arguments() {
        assert_eq!(watermark_args("0.4\n"), Some(vec!["0.4".to_string()]));
        assert_eq!(
            watermark_args("{absolute,1073741824}"),
            Some(vec!["absolute".to_string(), "1073741824".to_string()])
        );
        assert_eq!(
            watermark_args("{absolute,\"1GB\"}"),
            Some(vec!["absolute".to_string(), "1GB".to_string()])
        );
        assert!(is_alarm_watermark(&[ALARM_WATERMARK.to_string()]));
        assert!(!is_alarm_watermark(&["0.4".to_string()]));
    }

    #[test]
    fn the_connection_name_is_read_from_the_client_properties() {
        let props = r#"[{"capabilities",[{"basic.nack",true}]},{"connection_name","gateway@gw-1/publish"},{"product","lapin"}]"#;
        assert_eq!(connection_name(props), Some("gateway@gw-1/publish"));
        assert_eq!(connection_name(r#"[{"product","lapin"}]"#), None);
    }
}
