//! The pattern every reloadable input follows (the serving key pair, the policy file): a
//! source is polled on a timer and says what changed since the last poll. A change is
//! reported once, good or bad, so a broken input is logged and counted once, not at every
//! tick, and the last good value stays in force.

/// What a poll found.
#[derive(Debug)]
pub(crate) enum Reload<T, E> {
    /// Nothing new since the last poll.
    Unchanged,
    /// A new value, checked and ready to use.
    Loaded(T),
    /// A change that cannot be used.
    Failed(E),
}

impl<T, E> Reload<T, E> {
    /// The same finding with the error converted.
    pub(crate) fn map_err<F>(self, f: impl FnOnce(E) -> F) -> Reload<T, F> {
        match self {
            Reload::Unchanged => Reload::Unchanged,
            Reload::Loaded(value) => Reload::Loaded(value),
            Reload::Failed(e) => Reload::Failed(f(e)),
        }
    }
}

/// What an input held at the last poll: its contents, or what went wrong reading it.
#[derive(Debug)]
pub(crate) struct LastSeen<S>(S);

impl<S: PartialEq> LastSeen<S> {
    pub(crate) fn new(seen: S) -> Self {
        LastSeen(seen)
    }

    /// Remembers `now`; true when it differs from what was seen before.
    pub(crate) fn changed(&mut self, now: S) -> bool {
        if now == self.0 {
            return false;
        }
        self.0 = now;
        true
    }
}
