//! Pins sqlx's SQLite worker threads to the dispatch of the service whose connection they run.
//!
//! Each SQLite connection runs on a thread of its own, and every command carries the caller's
//! current span there, where the thread drops its copy when the command is done. If that copy is
//! the span's last reference, the registry closes the span and then its parent through the
//! *thread's* default dispatch, which on that thread is the process default, not the service's:
//! the parent is never closed in its own registry (never exported: traces lost parts of their
//! tree), and the process default panics on an id it never issued. A connection belongs to one
//! service's pool, so its thread takes that service's dispatch as its default the first time it
//! enters one of the service's spans.

use std::{
    cell::Cell,
    sync::{Arc, OnceLock},
};

use tracing::{Subscriber, dispatcher::WeakDispatch, span};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// Threads sqlx-sqlite spawns for its connections are named `sqlx-sqlite-worker-<n>`.
const SQLITE_WORKER: &str = "sqlx-sqlite-worker";

thread_local! {
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

pub(super) struct PinWorkerThreads {
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl PinWorkerThreads {
    pub(super) fn new(dispatch: Arc<OnceLock<WeakDispatch>>) -> Self {
        Self { dispatch }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PinWorkerThreads {
    fn on_enter(&self, _id: &span::Id, _ctx: Context<'_, S>) {
        if PINNED.get() {
            return;
        }
        let on_worker = std::thread::current()
            .name()
            .is_some_and(|name| name.starts_with(SQLITE_WORKER));
        if !on_worker {
            // Decided once per thread: async workers serve every service and keep the process
            // default, each task running in its service's dispatch while polled.
            PINNED.set(true);
            return;
        }
        if let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) {
            PINNED.set(true);
            // For the thread's whole life: it runs this connection and nothing else.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        }
    }
}
