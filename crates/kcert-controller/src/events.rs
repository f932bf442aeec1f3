//! Kubernetes Events about CSRs, published off the reconcile path.
//!
//! An Event is an API write of its own. Publishing it inside a reconcile would add a round trip
//! to every decision and issuance and hold a concurrency slot while it runs, so reconciles only
//! queue events; one background task publishes them a few at a time. When the queue is full
//! (the API server is slower than the flow of CSRs) events are dropped and counted in
//! `kcert_events_dropped_total`: the CSR's conditions, the provenance annotation, the log and
//! the ledger remain the record.

use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many events may wait for the API server before new ones are dropped.
const QUEUE: usize = 4096;
/// Events published concurrently.
const IN_FLIGHT: usize = 4;

/// What an event is about, which decides whether it is published at a given [`EventLevel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventClass {
    /// Something a human should look at: denials, requests left pending, signing failures.
    Problem,
    /// An automatic approval, naming the rule.
    Decision,
    /// A certificate issued.
    Issuance,
}

/// Which events are published (`--events`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventLevel {
    /// Only problems: denials, requests left for a human, signing failures.
    Problems,
    /// Problems and approvals (the default): every decision the approver writes is explained
    /// where `kubectl describe csr` shows it.
    #[default]
    Decisions,
    /// Also one event per issued certificate (serial, subject, expiry).
    All,
}

impl EventLevel {
    /// Whether events of `class` are published at this level.
    pub fn publishes(self, class: EventClass) -> bool {
        match self {
            EventLevel::Problems => class == EventClass::Problem,
            EventLevel::Decisions => class != EventClass::Issuance,
            EventLevel::All => true,
        }
    }
}

impl std::str::FromStr for EventLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "problems" => Ok(EventLevel::Problems),
            "decisions" => Ok(EventLevel::Decisions),
            "all" => Ok(EventLevel::All),
            other => Err(format!(
                "unknown event level {other:?}: use problems, decisions or all"
            )),
        }
    }
}

/// The queue reconciles hand their events to.
pub struct EventSink {
    level: EventLevel,
    tx: mpsc::Sender<(Event, k8s_openapi::api::core::v1::ObjectReference)>,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// A sink and the task that publishes what it is given; the task ends when the sink is
    /// dropped and the queue is drained.
    pub fn new(
        recorder: Recorder,
        level: EventLevel,
        metrics: Arc<Metrics>,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let publisher = queued.for_each_concurrent(IN_FLIGHT, move |(event, reference)| {
            let recorder = recorder.clone();
            async move {
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, reason = %event.reason, "cannot publish an Event");
                }
            }
        });
        (EventSink { level, tx, metrics }, publisher)
    }

    /// Queue an event on `csr` if the level publishes its class; never waits.
    pub fn emit(
        &self,
        csr: &CertificateSigningRequest,
        class: EventClass,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        if !self.level.publishes(class) {
            return;
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(crate::conditions::truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if self.tx.try_send((event, csr.object_ref(&()))).is_err() {
            self.metrics.event_dropped();
            tracing::debug!(reason, "event queue full; event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_publish_what_they_say() {
        use EventClass::*;
        let table = [
            (EventLevel::Problems, [true, false, false]),
            (EventLevel::Decisions, [true, true, false]),
            (EventLevel::All, [true, true, true]),
        ];
        for (level, expected) in table {
            let got = [Problem, Decision, Issuance].map(|c| level.publishes(c));
            assert_eq!(got, expected, "{level:?}");
        }
        assert_eq!("all".parse::<EventLevel>(), Ok(EventLevel::All));
        assert!(
            "verbose"
                .parse::<EventLevel>()
                .unwrap_err()
                .contains("problems, decisions or all")
        );
    }
}
