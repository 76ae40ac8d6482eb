//! The Prometheus text a side serves: read from its status, journal and history at each
//! scrape (one collector, nothing double-booked), named by Prometheus' conventions: the
//! `ftvm_` prefix, units in the name, counters ending in `_total`.

use std::fmt;

use ftvm_ft::{Role, Status};
use ftvm_net::SwitchStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::history::Sample;
use crate::journal::Counts;

/// The content type of what [`text`] returns (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape shows.
#[derive(Debug, Clone)]
pub enum Figures {
    /// A primary, backup or spare.
    Vm {
        status: Box<Status>,
        counts: Counts,
        latest: Option<Sample>,
    },
    Switch(SwitchStats),
}

/// The exposition of `figures`.
pub fn text(figures: Figures) -> String {
    let mut registry = Registry::with_prefix("ftvm");
    registry.register_collector(Box::new(figures));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        match self {
            Figures::Vm {
                status,
                counts,
                latest,
            } => {
                vm(&mut enc, status, latest.as_ref())?;
                journal(&mut enc, counts)
            }
            Figures::Switch(s) => switch(&mut enc, s),
        }
    }
}

fn gauge<N: EncodeGaugeValue + fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// A counter with one label taking each of `values`.
fn labelled_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, *value)];
        ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Every role, so a dashboard sees the one that is 1 and the others 0 (Prometheus' way to
/// show a state).
const ROLES: [Role; 11] = [
    Role::Starting,
    Role::Solo,
    Role::Primary,
    Role::PrimaryAlone,
    Role::PrimaryWaitingForBackup,
    Role::Backup,
    Role::BackupClaiming,
    Role::Spare,
    Role::SpareReceiving,
    Role::Halted,
    Role::Stopped,
];

fn role(enc: &mut DescriptorEncoder, now: &Role) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "role",
        "The side's role: 1 for the one it has now",
        None,
        MetricType::Gauge,
    )?;
    let moved = Role::MovedTo { to: String::new() };
    for r in ROLES.iter().chain([&moved]) {
        let labels = [("role", r.name())];
        let on = i64::from(r.name() == now.name());
        ConstGauge::new(on).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn vm(enc: &mut DescriptorEncoder, s: &Status, latest: Option<&Sample>) -> fmt::Result {
    role(enc, &s.role)?;
    gauge(
        enc,
        "generation",
        "The FT generation (one more after every failover)",
        s.generation as i64,
    )?;
    counter(
        enc,
        "guest_instructions",
        "Guest instructions executed (replayed, on a backup)",
        s.icount,
    )?;
    gauge(
        enc,
        "guest_mips",
        "Guest instructions per microsecond over the last second",
        latest.map_or(0.0, |l| l.mips),
    )?;
    gauge(
        enc,
        "execution_lag_seconds",
        "How far the backup's execution trails the primary's",
        s.lag_ms / 1e3,
    )?;
    counter(
        enc,
        "log_bytes",
        "Log bytes sent (primary) or received (backup)",
        s.log_bytes,
    )?;
    counter(
        enc,
        "log_acked_bytes",
        "Log bytes the backup acknowledged holding (primary)",
        s.log_acked_bytes,
    )?;
    counter(
        enc,
        "log_messages",
        "Logging-channel messages sent (primary) or received (backup)",
        s.log_messages,
    )?;
    gauge(
        enc,
        "held_outputs",
        "Outputs waiting for the backup's ack (the Output Rule)",
        s.held_outputs as i64,
    )?;
    counter(
        enc,
        "outputs_released",
        "Outputs released after the backup's ack",
        s.outputs_released,
    )?;
    delay_histogram(enc, s)?;
    gauge(
        enc,
        "throttle_ratio",
        "Share of time the primary pauses itself so a lagging backup catches up",
        s.throttle_pct / 100.0,
    )?;
    counter(
        enc,
        "clones_completed",
        "Live clones completed by this side (each one a new backup or a move)",
        s.clones_done,
    )?;
    clone(enc, s)?;
    io(enc, s)
}

fn delay_histogram(enc: &mut DescriptorEncoder, s: &Status) -> fmt::Result {
    let h = &s.output_delay;
    let mut buckets = Vec::with_capacity(h.le_ms.len() + 1);
    let mut below = 0;
    for (le, cumulative) in h.le_ms.iter().zip(&h.cumulative) {
        buckets.push((le / 1e3, cumulative.saturating_sub(below)));
        below = *cumulative;
    }
    buckets.push((f64::INFINITY, h.count.saturating_sub(below)));
    let mut m = enc.encode_descriptor(
        "output_delay_seconds",
        "How long outputs waited for the backup's ack",
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<NoLabelSet>(h.sum_ms / 1e3, h.count, &buckets, None)
}

fn clone(enc: &mut DescriptorEncoder, s: &Status) -> fmt::Result {
    use ftvm_ft::{CloneState, CloneStatus};
    let state = match &s.clone {
        CloneStatus::None => None,
        CloneStatus::To { state, .. } | CloneStatus::From { state, .. } => Some(state),
    };
    let (running, rounds, sent_bytes, pages, paused_ms) = match state {
        Some(CloneState::Copying {
            round,
            pages_held,
            mib_sent,
            ..
        }) => (
            1,
            u64::from(*round) + 1,
            (mib_sent * 1048576.0) as u64,
            *pages_held,
            0.0,
        ),
        Some(CloneState::Receiving { pages }) => (1, 0, 0, *pages, 0.0),
        Some(CloneState::Done {
            rounds, paused_ms, ..
        }) => (0, u64::from(*rounds), 0, 0, *paused_ms),
        _ => (0, 0, 0, 0, 0.0),
    };
    gauge(
        enc,
        "clone_running",
        "1 while a live clone is sent or received",
        i64::from(running),
    )?;
    gauge(
        enc,
        "clone_rounds",
        "Pre-copy rounds of the running or last completed clone",
        rounds as i64,
    )?;
    gauge(
        enc,
        "clone_sent_bytes",
        "Compressed bytes the running clone sent",
        sent_bytes as i64,
    )?;
    gauge(
        enc,
        "clone_pages",
        "Pages the running clone's receiver holds",
        pages as i64,
    )?;
    gauge(
        enc,
        "clone_pause_seconds",
        "How long the VM paused for the last completed clone's switch",
        paused_ms / 1e3,
    )
}

fn io(enc: &mut DescriptorEncoder, s: &Status) -> fmt::Result {
    let io = &s.io;
    let figures: [(&str, &str, u64); 9] = [
        ("disk_reads", "Disk read requests served", io.disk_reads),
        ("disk_writes", "Disk write requests served", io.disk_writes),
        ("disk_flushes", "Disk flushes served", io.disk_flushes),
        ("disk_errors", "Disk requests that failed", io.disk_errors),
        (
            "disk_read_bytes",
            "Bytes read from disk",
            io.disk_read_bytes,
        ),
        (
            "disk_written_bytes",
            "Bytes written to disk",
            io.disk_written_bytes,
        ),
        ("net_frames_sent", "Frames the VM sent", io.net_frames_sent),
        (
            "net_frames_received",
            "Frames delivered to the VM",
            io.net_frames_received,
        ),
        (
            "net_frames_dropped",
            "Frames the VM sent with no network attached",
            io.net_frames_dropped,
        ),
    ];
    for (name, help, v) in figures {
        counter(enc, name, help, v)?;
    }
    Ok(())
}

fn journal(enc: &mut DescriptorEncoder, c: &Counts) -> fmt::Result {
    counter(
        enc,
        "failovers",
        "Times this side went live after its primary was lost",
        c.failovers,
    )?;
    counter(
        enc,
        "peer_lost",
        "Times this side stopped hearing its peer",
        c.backups_lost + c.primaries_lost,
    )?;
    labelled_counter(
        enc,
        "test_and_set",
        "Test-and-set attempts on the tie-breaker, by outcome",
        "outcome",
        &[
            ("won", c.claims_won),
            ("lost", c.claims_lost),
            ("unreachable", c.tie_breaker_unreachable),
        ],
    )?;
    labelled_counter(
        enc,
        "clones",
        "Live clones by outcome (sent: started, done, failed; received: received, broken)",
        "outcome",
        &[
            ("started", c.clones_started),
            ("done", c.clones_done),
            ("failed", c.clones_failed),
            ("received", c.clones_received),
            ("broken", c.clones_receive_failed),
        ],
    )
}

fn switch(enc: &mut DescriptorEncoder, s: &SwitchStats) -> fmt::Result {
    counter(enc, "switch_frames", "Frames forwarded", s.frames)?;
    counter(enc, "switch_bytes", "Bytes forwarded", s.bytes)?;
    counter(
        enc,
        "switch_dropped_frames",
        "Frames dropped: the destination's socket was full or gone",
        s.dropped,
    )?;
    counter(
        enc,
        "switch_malformed_messages",
        "Messages that were not Ethernet frames",
        s.malformed,
    )?;
    counter(
        enc,
        "switch_ports_connected",
        "Ports that joined the switch",
        s.ports_connected,
    )?;
    counter(enc, "switch_ports_gone", "Ports that left", s.ports_gone)?;
    gauge(
        enc,
        "switch_ports",
        "Ports connected now",
        s.ports_connected.saturating_sub(s.ports_gone) as i64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_exposes_conventional_names_with_its_role_and_histogram() {
        let mut status = Status {
            role: Role::Primary,
            generation: 3,
            icount: 1234,
            held_outputs: 2,
            ..Status::default()
        };
        status.output_delay = ftvm_ft::DelayHistogram {
            le_ms: vec![0.5, 1.0],
            cumulative: vec![3, 7],
            count: 8,
            sum_ms: 4.0,
        };
        let out = text(Figures::Vm {
            status: Box::new(status),
            counts: Counts {
                failovers: 1,
                claims_won: 1,
                ..Counts::default()
            },
            latest: None,
        });
        for line in [
            "ftvm_role{role=\"primary\"} 1",
            "ftvm_role{role=\"backup\"} 0",
            "ftvm_generation 3",
            "ftvm_guest_instructions_total 1234",
            "ftvm_held_outputs 2",
            "ftvm_failovers_total 1",
            "ftvm_test_and_set_total{outcome=\"won\"} 1",
            "ftvm_output_delay_seconds_bucket{le=\"0.0005\"} 3",
            "ftvm_output_delay_seconds_bucket{le=\"0.001\"} 7",
            "ftvm_output_delay_seconds_bucket{le=\"+Inf\"} 8",
            "ftvm_output_delay_seconds_count 8",
            "# TYPE ftvm_execution_lag_seconds gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
    }
}
