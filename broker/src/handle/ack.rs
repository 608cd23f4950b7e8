//! Stored-before-acknowledged: the [`AckGuard`] a QoS 1/2 message's copies
//! hold until each is durable (or, for a congested subscriber, sent), and
//! the [`LazyGuard`] that creates it the first time a copy needs one.
//!
//! Durability: a publisher's PUBACK / PUBREC waits for every copy bound for
//! a persistent session (and the retained copy, and the copies forwarded to
//! other nodes that are up) to be stored. Each of those holds a clone of the
//! message's guard; the last drop reports success or failure to whoever
//! waits (the publisher's session, or the node that forwarded the message
//! here).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{AckDone, SessionRef};

/// Whom a finished [`AckGuard`] tells.
enum Completion {
    /// The publisher's session: `AckDone` for its pending acknowledgement.
    Session {
        publisher: SessionRef,
        token: u64,
        generation: u64,
    },
    /// The node that forwarded the message here.
    Forwarded(tokio::sync::oneshot::Sender<Result<(), cluster::ForwardRefusal>>),
}

/// A stored-before-acknowledged dependency of a QoS 1/2 message. Clones
/// travel with the copies that must be stored; when the last one is dropped,
/// the waiting side learns whether every holder succeeded.
#[derive(Clone)]
pub struct AckGuard(Arc<AckInner>);

struct AckInner {
    completion: Option<Completion>,
    failed: AtomicBool,
    /// The message's span (`mqtt.publish`, `cluster.apply`): it ends when
    /// the answer goes, after its last holder. `Span::none()` when not traced.
    _span: tracing::Span,
}

impl AckGuard {
    fn new(completion: Completion, span: tracing::Span) -> AckGuard {
        AckGuard(Arc::new(AckInner {
            completion: Some(completion),
            failed: AtomicBool::new(false),
            _span: span,
        }))
    }

    /// A guard that answers the node which forwarded a message here; `span`
    /// lasts until it does.
    pub fn forwarded(
        ack: tokio::sync::oneshot::Sender<Result<(), cluster::ForwardRefusal>>,
        span: tracing::Span,
    ) -> AckGuard {
        AckGuard::new(Completion::Forwarded(ack), span)
    }

    /// True if it answers a publisher of this node, whose acknowledgement
    /// may wait for a congested subscriber. A forwarded message's answer
    /// never does: it would hold up the whole link to its node.
    pub fn answers_publisher(&self) -> bool {
        matches!(self.0.completion, Some(Completion::Session { .. }))
    }

    /// The work this guard stands for failed: the waiting side must not be
    /// told the message is safe.
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Relaxed);
    }
}

impl Drop for AckInner {
    fn drop(&mut self) {
        let ok = !self.failed.load(Ordering::Relaxed);
        match self.completion.take() {
            Some(Completion::Session {
                publisher,
                token,
                generation,
            }) => publisher.send(AckDone {
                token,
                generation,
                ok,
            }),
            Some(Completion::Forwarded(ack)) => {
                let _ = ack.send(if ok {
                    Ok(())
                } else {
                    Err(cluster::ForwardRefusal::NotStored)
                });
            }
            None => {}
        }
    }
}

impl std::fmt::Debug for AckGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckGuard").finish_non_exhaustive()
    }
}

/// Creates the message's [`AckGuard`] the first time a copy needs one.
pub struct LazyGuard {
    factory: Option<Completion>,
    guard: Option<AckGuard>,
    /// Goes into the guard when it is created.
    span: tracing::Span,
}

impl LazyGuard {
    /// For messages nobody waits for (QoS 0, wills, retained on subscribe).
    pub fn none() -> LazyGuard {
        LazyGuard {
            factory: None,
            guard: None,
            span: tracing::Span::none(),
        }
    }

    /// For an inbound QoS 1/2 PUBLISH: tells the publisher's session.
    /// `span` (the message's `mqtt.publish`) lasts until the answer goes.
    pub fn publisher(
        publisher: SessionRef,
        token: u64,
        generation: u64,
        span: tracing::Span,
    ) -> LazyGuard {
        LazyGuard {
            factory: Some(Completion::Session {
                publisher,
                token,
                generation,
            }),
            guard: None,
            span,
        }
    }

    /// For a message forwarded by another node: answers it when done, and
    /// `span` lasts until then.
    pub fn forwarded(
        ack: tokio::sync::oneshot::Sender<Result<(), cluster::ForwardRefusal>>,
        span: tracing::Span,
    ) -> LazyGuard {
        LazyGuard {
            factory: None,
            guard: Some(AckGuard::forwarded(ack, span)),
            span: tracing::Span::none(),
        }
    }

    /// A clone of the guard, created on first use; `None` if nobody waits.
    pub fn get(&mut self) -> Option<AckGuard> {
        if self.guard.is_none() {
            let span = std::mem::replace(&mut self.span, tracing::Span::none());
            self.guard = Some(AckGuard::new(self.factory.take()?, span));
        }
        self.guard.clone()
    }

    /// True once a copy took a clone: the answer comes when they are done.
    pub fn created(&self) -> bool {
        self.guard.is_some()
    }
}

/// Storage callback that holds `guard` until the write is durable.
pub fn hold_until_durable(guard: Option<AckGuard>) -> Option<storage::Durable> {
    let guard = guard?;
    Some(Box::new(move |result: storage::Result<()>| {
        if let Err(e) = result {
            tracing::error!(error = %e, "store write failed; the message is not acknowledged");
            guard.fail();
        }
    }))
}
